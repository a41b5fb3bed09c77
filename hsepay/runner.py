"""Long-running processes: APIs under uvicorn, and (later) relays and consumers, in one event loop."""

from __future__ import annotations

import uvicorn

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.bootstrap import Runtime
from hsepay.commands.common import ready_engine


def build_app(rt: Runtime, service: str):
    engine = rt.engine(service)
    if service == "payments":
        return create_payments_app(engine)
    return create_orders_app(engine, orders_topic=rt.settings.kafka.orders_topic)


async def serve_api(rt: Runtime, service: str, *, host: str, port: int, with_workers: bool = False) -> None:
    await ready_engine(rt, service)
    server = uvicorn.Server(
        uvicorn.Config(build_app(rt, service), host=host, port=port, log_level="info", access_log=False)
    )
    try:
        await server.serve()
    finally:
        await rt.dispose()
