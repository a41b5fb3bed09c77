"""Long-running roles — APIs, outbox relays, inbox consumers, background loops — as tasks of one
event loop that stop together on SIGINT/SIGTERM (the HTTP servers themselves are in `hsepay.servers`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hsepay.bootstrap import Runtime
from hsepay.observability.probes import BrokerSource, ConsumerSource, CounterSource, DatabaseSource, RelaySource
from hsepay.observability.sources import Source, watching
from hsepay.periodic import Periodic, run_periodic
from hsepay.registry import ServiceSpec
from hsepay.relay.consumer import InboxConsumer
from hsepay.relay.outbox import OutboxRelay
from hsepay.servers import quiet_server

__all__ = ["Workers", "api_server", "serve_api", "start_workers", "wait_for_signal"]

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)


@dataclass
class Workers:
    """Relays, consumers and background loops of some services, running as tasks."""

    relays: dict[str, OutboxRelay] = field(default_factory=dict)
    consumers: dict[str, InboxConsumer] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(counter name, service) -> total of a background step's counts, for /metrics."""

    async def close(self) -> None:
        self.stop.set()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


def _run(job: Periodic, service: str, workers: Workers, max_backoff: float) -> Coroutine[Any, Any, None]:
    counted = None
    if job.counter:
        key = (job.counter, service)
        workers.counts[key] = 0

        def counted(count: int) -> None:
            workers.counts[key] += count

    return run_periodic(job, workers.stop, max_backoff=max_backoff, counted=counted)


@contextlib.asynccontextmanager
async def start_workers(
    rt: Runtime,
    specs: Iterable[ServiceSpec],
    *,
    relay: bool = True,
    consume: bool = True,
    only_consumers: bool = False,
) -> AsyncIterator[Workers]:
    """Run the chosen workers of `specs` until the block exits; then stop them and wait.

    `only_consumers`: this process's consumers are the only members of their groups (`hsepay up`
    on the embedded broker), so they read every partition without a group join.
    """
    workers = Workers()
    specs = list(specs)
    if any(spec.has_workers for spec in specs):
        await rt.connect_broker(workers.stop)
    for spec in specs:
        if not spec.has_workers:
            continue
        jobs = []
        if relay:
            workers.relays[spec.name] = rt.build_relay(spec)
            workers.tasks.append(asyncio.create_task(workers.relays[spec.name].relay_forever(workers.stop)))
            jobs.append(workers.relays[spec.name].purge_job())
        if consume:
            workers.consumers[spec.name] = rt.build_consumer(spec, static_assignment=only_consumers)
            workers.tasks.append(asyncio.create_task(workers.consumers[spec.name].consume_forever(workers.stop)))
            jobs += [workers.consumers[spec.name].purge_job(), *spec.jobs(rt.engine(spec.name), rt.settings)]
        for job in jobs:
            workers.tasks.append(asyncio.create_task(_run(job, spec.name, workers, rt.settings.saga.max_backoff)))
    try:
        with watching(_sources(rt, workers)):
            yield workers
    finally:
        await workers.close()


def _sources(rt: Runtime, workers: Workers) -> list[Source]:
    """What the workers of this process report to /metrics and /health/ready."""
    from hsepay import registry

    found: list[Source] = []
    names = dict.fromkeys([*workers.relays, *workers.consumers])
    for name in names:
        database = registry.get(name).database
        assert database is not None
        found.append(DatabaseSource(name, rt.engine(name), database.outbox, database.inbox))
    if names and rt.broker is not None:
        found.append(BrokerSource(rt.broker_config(next(iter(names)))))
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


def api_server(rt: Runtime, spec: ServiceSpec, host: str, port: int) -> uvicorn.Server:
    engine = rt.engine(spec.name) if spec.database is not None else None
    return quiet_server(spec.create_app(engine, rt.settings), host, port)


async def serve_api(rt: Runtime, spec: ServiceSpec, *, host: str, port: int, with_workers: bool = False) -> None:
    if spec.database is not None:
        await rt.wait_ready_engine(spec.name)
    server = api_server(rt, spec, host, port)
    stop = asyncio.Event()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if with_workers:
                await stack.enter_async_context(start_workers(rt, [spec]))
            serving = asyncio.create_task(server.serve())
            log.info("%s API on http://%s:%d (docs: /schema/swagger)", spec.name, host, port)
            waiting = asyncio.create_task(wait_for_signal(stop))
            await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stop.set()
            await serving
            waiting.cancel()
    finally:
        await rt.dispose()
