"""Long-running processes: APIs under uvicorn, outbox relays, inbox consumers and the re-drive,
all as tasks of one event loop that stop together on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import uvicorn

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.bootstrap import Runtime, broker_config, build_consumer, build_relay, resolve_kafka
from hsepay.orders import service as orders_service
from hsepay.relay.inbox_consumer import INFRASTRUCTURE_ERRORS, InboxConsumer
from hsepay.relay.outbox_relay import OutboxRelay
from hsepay.relay.timing import sleep_or_stop

__all__ = ["Workers", "build_app", "run_until_stopped", "serve_api", "start_workers"]

log = logging.getLogger(__name__)


def build_app(rt: Runtime, service: str):
    engine = rt.engine(service)
    if service == "payments":
        return create_payments_app(engine, api=rt.settings.api)
    return create_orders_app(engine, orders_topic=rt.settings.kafka.orders_topic, api=rt.settings.api)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


@dataclass
class Workers:
    """Relays, consumers and the re-drive of some services, running as tasks."""

    relays: dict[str, OutboxRelay] = field(default_factory=dict)
    consumers: dict[str, InboxConsumer] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task] = field(default_factory=list)

    async def close(self) -> None:
        self.stop.set()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def redrive_loop(rt: Runtime, stop: asyncio.Event) -> None:
    """Re-send the payment request of orders stuck in `created` (lost messages, lost broker)."""
    saga = rt.settings.saga
    while not stop.is_set():
        try:
            async with rt.engine("orders").begin() as conn:
                count = await orders_service.redrive_stale_orders(
                    conn, older_than=saga.redrive_after, topic=rt.settings.kafka.orders_topic
                )
            if count:
                log.warning("re-sent the payment request of %d order(s) older than %gs", count, saga.redrive_after)
        except INFRASTRUCTURE_ERRORS as exc:
            log.warning("re-drive skipped: database unavailable (%r)", exc)
        await sleep_or_stop(stop, saga.redrive_interval)


@contextlib.asynccontextmanager
async def start_workers(
    rt: Runtime, services: Iterable[str], *, relay: bool = True, consume: bool = True
) -> AsyncIterator[Workers]:
    """Run the chosen workers of `services` until the block exits; then stop them and wait."""
    bootstrap, idempotence = resolve_kafka(rt.settings)
    workers = Workers()
    for service in services:
        broker = broker_config(rt.settings, bootstrap, idempotence, service)
        if relay:
            workers.relays[service] = build_relay(rt, service, broker)
            workers.tasks.append(asyncio.create_task(workers.relays[service].run(workers.stop)))
        if consume:
            workers.consumers[service] = build_consumer(rt, service, broker)
            workers.tasks.append(asyncio.create_task(workers.consumers[service].run(workers.stop)))
            if service == "orders":
                workers.tasks.append(asyncio.create_task(redrive_loop(rt, workers.stop)))
    try:
        yield workers
    finally:
        await workers.close()


async def run_until_stopped(stop: asyncio.Event) -> None:
    """Wait for SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def api_server(rt: Runtime, service: str, host: str, port: int) -> _Server:
    return _Server(uvicorn.Config(build_app(rt, service), host=host, port=port, log_level="warning", access_log=False))


async def serve_api(rt: Runtime, service: str, *, host: str, port: int, with_workers: bool = False) -> None:
    await rt.ready_engine(service)
    server = api_server(rt, service, host, port)
    stop = asyncio.Event()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if with_workers:
                await stack.enter_async_context(start_workers(rt, [service]))
            serving = asyncio.create_task(server.serve())
            log.info("%s API on http://%s:%d (docs: /schema/swagger)", service, host, port)
            waiting = asyncio.create_task(run_until_stopped(stop))
            await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stop.set()
            await serving
            waiting.cancel()
    finally:
        await rt.dispose()
