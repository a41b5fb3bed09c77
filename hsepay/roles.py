"""Long-running roles — APIs, outbox relays, inbox consumers, background jobs — as tasks of one
event loop that stop together on SIGINT/SIGTERM (the HTTP servers themselves are in `hsepay.servers`).

A role runs the parts of a built `System`; nothing here builds or checks anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hsepay.heap import settle_after_startup
from hsepay.observability.probes import BrokerSource, ConsumerSource, CounterSource, DatabaseSource, RelaySource
from hsepay.observability.sources import Source, watching
from hsepay.periodic import Periodic, run_periodic
from hsepay.servers import quiet_server
from hsepay.system import System

if TYPE_CHECKING:
    from hsepay.httpserver import EmbeddedServer
    from hsepay.relay.consumer import InboxConsumer
    from hsepay.relay.outbox import OutboxRelay

__all__ = ["Workers", "api_server", "serve_api", "start_workers", "wait_for_signal"]

log = logging.getLogger(__name__)


@dataclass
class Workers:
    """The relays, consumers and background jobs of a system, running as tasks."""

    relays: dict[str, OutboxRelay] = field(default_factory=dict)
    consumers: dict[str, InboxConsumer] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(counter name, service) -> total of a background job's counts, for /metrics."""

    async def close(self) -> None:
        self.stop.set()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def count(self, job: Periodic, service: str) -> Callable[[int], None] | None:
        """Where a job with a counter adds its counts (None: it has none)."""
        if job.counter is None:
            return None
        key = (job.counter, service)
        self.counts[key] = 0

        def counted(count: int) -> None:
            self.counts[key] += count

        return counted


@contextlib.asynccontextmanager
async def start_workers(system: System) -> AsyncIterator[Workers]:
    """Run the relays, consumers and background jobs of `system` until the block exits; then stop
    them and wait. Each reports to the process's /metrics and /health/ready meanwhile."""
    workers = Workers()
    max_backoff = system.settings.saga.max_backoff
    for name, service in system.services.items():
        if service.relay is not None:
            workers.relays[name] = service.relay
            workers.tasks.append(asyncio.create_task(service.relay.relay_forever(workers.stop)))
        if service.consumer is not None:
            workers.consumers[name] = service.consumer
            workers.tasks.append(asyncio.create_task(service.consumer.consume_forever(workers.stop)))
        for job in service.jobs:
            running = run_periodic(job, workers.stop, max_backoff=max_backoff, counted=workers.count(job, name))
            workers.tasks.append(asyncio.create_task(running))
    try:
        with watching(_sources(system, workers)):
            yield workers
    finally:
        await workers.close()


def _sources(system: System, workers: Workers) -> list[Source]:
    """What the workers of this process report to /metrics and /health/ready."""
    found: list[Source] = []
    names = dict.fromkeys([*workers.relays, *workers.consumers])
    for name in names:
        service = system[name]
        database = service.spec.database
        assert database is not None and service.engine is not None
        found.append(DatabaseSource(name, service.engine, database.outbox, database.inbox))
    brokers = [system[name].broker for name in names if system[name].broker is not None]
    if brokers:
        found.append(BrokerSource(brokers[0]))
    found += [RelaySource(name, relay) for name, relay in workers.relays.items()]
    found += [ConsumerSource(name, consumer) for name, consumer in workers.consumers.items()]
    if workers.counts:
        found.append(CounterSource(("background",), lambda: workers.counts))
    return found


async def wait_for_signal(stop: asyncio.Event) -> None:
    """Set `stop` on SIGINT or SIGTERM, and return when it is set."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def api_server(system: System, service: str, host: str, port: int) -> EmbeddedServer:
    """The server of the app of one service of `system` (built with apps=True), in this event loop."""
    app = system[service].app
    if app is None:
        raise ValueError(f"the {service} app was not built")
    return quiet_server(app, host, port, system.settings.security.header_timeout)


async def serve_api(system: System, service: str, *, host: str, port: int) -> None:
    """Serve one service's app in this process, with whatever workers `system` has, until a signal."""
    server = api_server(system, service, host, port)
    stop = asyncio.Event()
    async with start_workers(system):
        serving = asyncio.create_task(server.serve())
        log.info("%s API on http://%s:%d (docs: /schema/swagger)", service, host, port)
        settle_after_startup()
        waiting = asyncio.create_task(wait_for_signal(stop))
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stop.set()
        await serving
        waiting.cancel()
