"""`hsepay relay` and `hsepay consume`: the saga's workers in the foreground."""

from __future__ import annotations

import logging

from hsepay.commands.common import ServiceArg, execute, open_runtime, services

log = logging.getLogger("hsepay")


def _run_workers(choice: str, *, relay: bool, consume: bool) -> None:
    from hsepay.roles import start_workers, wait_for_signal

    specs = services(choice)

    async def body() -> None:
        async with open_runtime(specs) as rt:
            for spec in specs:
                await rt.wait_ready_engine(spec.name)
            await rt.check_distinct_databases()
            async with start_workers(rt, specs, relay=relay, consume=consume) as workers:
                log.info(
                    "running %s for %s; Ctrl-C stops",
                    "relay" if relay else "consumer",
                    ", ".join(spec.name for spec in specs),
                )
                await wait_for_signal(workers.stop)

    execute(body)


def relay(service: ServiceArg = "all") -> None:
    """Relay outbox rows to Kafka. Several may run per service: one is active, the others stand by.

    Example: hsepay relay orders
    """
    _run_workers(service, relay=True, consume=False)


def consume(service: ServiceArg = "all") -> None:
    """Consume a service's topics through its inbox (the orders consumer also re-drives stuck orders).

    Example: hsepay consume payments
    """
    _run_workers(service, relay=False, consume=True)
