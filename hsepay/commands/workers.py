"""`hsepay relay` and `hsepay consume`: the saga's workers in the foreground."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from hsepay.commands.common import open_runtime, run, services_arg
from hsepay.runner import run_until_stopped, start_workers

log = logging.getLogger("hsepay")

ServiceArg = Annotated[str, typer.Argument(help="payments, orders or all")]


def _run(service: str, *, relay: bool, consume: bool) -> None:
    services = services_arg(service)

    async def body() -> None:
        async with open_runtime(services) as rt:
            for name in services:
                await rt.ready_engine(name)
            async with start_workers(rt, services, relay=relay, consume=consume) as workers:
                log.info("running %s for %s; Ctrl-C stops", "relay" if relay else "consumer", ", ".join(services))
                await run_until_stopped(workers.stop)

    run(body)


def relay(service: ServiceArg = "all") -> None:
    """Relay outbox rows to Kafka. Several may run per service: one is active, the others stand by.

    Example: hsepay relay orders
    """
    _run(service, relay=True, consume=False)


def consume(service: ServiceArg = "all") -> None:
    """Consume a service's topics through its inbox (the orders consumer also re-drives stuck orders).

    Example: hsepay consume payments
    """
    _run(service, relay=False, consume=True)
