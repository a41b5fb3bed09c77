"""`hsepay relay` and `hsepay consume`: the saga's workers in the foreground."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from hsepay.commands.common import ServiceArg, built, execute, services
from hsepay.config import get_settings

log = logging.getLogger("hsepay")

MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=1,
        max=65535,
        help="Serve /metrics, /health/live and /health/ready on this port (default: HSEPAY_METRICS_PORT; none).",
        show_default=False,
    ),
]
MetricsHostOption = Annotated[str, typer.Option("--metrics-host", help="Interface of --metrics-port.")]


def _run_workers(choice: str, *, relay: bool, consume: bool, metrics_host: str, metrics_port: int | None) -> None:
    from hsepay.heap import settle_after_startup
    from hsepay.roles import start_workers, wait_for_signal
    from hsepay.servers import serving_metrics

    specs = services(choice)

    async def body() -> None:
        port = metrics_port or get_settings().observability.metrics_port
        # Metrics first: /health/live answers while the build waits for the database and the broker,
        # /health/ready only once the workers run.
        async with (
            serving_metrics(metrics_host, port),
            built(specs, wait=True, relays=relay, consumers=consume) as system,
            start_workers(system) as workers,
        ):
            log.info(
                "running %s for %s; Ctrl-C stops",
                "relay" if relay else "consumer",
                ", ".join(spec.name for spec in specs),
            )
            settle_after_startup()
            await wait_for_signal(workers.stop)

    execute(body)


def relay(
    service: ServiceArg = "all", metrics_port: MetricsPortOption = None, metrics_host: MetricsHostOption = "127.0.0.1"
) -> None:
    """Relay outbox rows to Kafka. Several may run per service: one is active, the others stand by.

    Example: hsepay relay orders --metrics-port 9101
    """
    _run_workers(service, relay=True, consume=False, metrics_host=metrics_host, metrics_port=metrics_port)


def consume(
    service: ServiceArg = "all", metrics_port: MetricsPortOption = None, metrics_host: MetricsHostOption = "127.0.0.1"
) -> None:
    """Consume a service's topics through its inbox (the orders consumer also re-drives stuck orders).

    Example: hsepay consume payments --metrics-port 9102
    """
    _run_workers(service, relay=False, consume=True, metrics_host=metrics_host, metrics_port=metrics_port)
