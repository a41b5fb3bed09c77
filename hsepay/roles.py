"""Long-running roles — APIs under uvicorn, outbox relays, inbox consumers, background loops — as
tasks of one event loop that stop together on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import uvicorn

from hsepay.bootstrap import Runtime
from hsepay.registry import Periodic, ServiceSpec
from hsepay.relay.consumer import InboxConsumer
from hsepay.relay.outbox import OutboxRelay
from hsepay.resilience import Backoff, run_periodically

__all__ = ["Workers", "api_server", "serve_api", "start_workers", "wait_for_signal"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


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


def _periodic(rt: Runtime, spec: ServiceSpec, periodic: Periodic, workers: Workers):
    stop = workers.stop
    if periodic.counter:
        workers.counts[(periodic.counter, spec.name)] = 0

    async def step() -> None:
        async with rt.engine(spec.name).begin() as conn:
            count = await periodic.step(conn, rt.settings)
        if count and periodic.counter:
            workers.counts[(periodic.counter, spec.name)] += count
        if count:
            log.warning("%s %s: " + periodic.report, spec.name, periodic.name, count)

    return run_periodically(
        f"{spec.name} {periodic.name}",
        step,
        stop,
        periodic.interval(rt.settings),
        Backoff(rt.settings.saga.max_backoff),
    )


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
        if relay:
            workers.relays[spec.name] = rt.build_relay(spec)
            workers.tasks.append(asyncio.create_task(workers.relays[spec.name].relay_forever(workers.stop)))
        if consume:
            workers.consumers[spec.name] = rt.build_consumer(spec, static_assignment=only_consumers)
            workers.tasks.append(asyncio.create_task(workers.consumers[spec.name].consume_forever(workers.stop)))
            for periodic in spec.background:
                workers.tasks.append(asyncio.create_task(_periodic(rt, spec, periodic, workers)))
    from hsepay.observability.sources import watching
    from hsepay.observability.wiring import worker_sources

    try:
        with watching(worker_sources(rt, workers)):
            yield workers
    finally:
        await workers.close()


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


KEEP_ALIVE = 75
"""Seconds an idle keep-alive connection stays open. uvicorn's default of 5 s equals httpx's pool
expiry, and the two race: a client that reuses a connection at 4.9 s of its own clock meets a
server that closed it at 5 s of its own, and the request gets a reset (reproduced: 20 resets in
14,600 requests at 64 connections). Servers keep connections longer than clients (nginx 75 s)."""


def quiet_server(app, host: str, port: int) -> _Server:
    # log_config=None: uvicorn's lines go through hsepay's handlers (JSON off a terminal), not its own.
    return _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            log_config=None,
            timeout_keep_alive=KEEP_ALIVE,
        )
    )


def serve_api_processes(spec: ServiceSpec, *, host: str, port: int, workers: int) -> None:
    """Serve one API with `workers` processes under granian (blocks until SIGINT/SIGTERM).

    Measured on this 2-core box, POST /orders at 64 connections with every role running (docs/
    BENCHMARKS.md): uvicorn (uvloop, httptools) 1,107 req/s with one process and 1,124 with two;
    granian 1,409 and 1,563. Each worker builds its app with `hsepay.api.asgi.application`.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    from hsepay.api.asgi import PARENT_VARIABLE, SERVICE_VARIABLE

    os.environ[SERVICE_VARIABLE] = spec.name
    os.environ[PARENT_VARIABLE] = str(os.getpid())  # its workers end with it (hsepay.api.asgi)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One /metrics for all the workers of this port (prometheus-client's multiprocess mode).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"hsepay-{spec.name}-metrics-")
    log.info(
        "%s API on http://%s:%d with %d worker process(es) (docs: /schema/swagger)", spec.name, host, port, workers
    )
    Granian(
        "hsepay.api.asgi:application",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(keep_alive=True),
        websockets=False,
        backlog=2048,
        respawn_failed_workers=True,
        log_enabled=False,
    ).serve()


def api_server(rt: Runtime, spec: ServiceSpec, host: str, port: int) -> _Server:
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
