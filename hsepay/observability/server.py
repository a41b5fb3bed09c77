"""The --metrics-port of worker roles: /metrics, /health/live and /health/ready on their own port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from hsepay.config import ConfigError
from hsepay.ports import port_problem

__all__ = ["serving_metrics"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def serving_metrics(host: str, port: int | None) -> AsyncIterator[None]:
    """Serve the process's metrics and health on host:port while the block runs (port None: nothing)."""
    if port is None:
        yield
        return
    from hsepay.observability.endpoints import metrics_app
    from hsepay.roles import quiet_server

    problem = port_problem(host, port)  # uvicorn would sys.exit() from inside the event loop instead
    if problem:
        raise ConfigError(f"--metrics-port: {host}:{port} is not available ({problem})")
    server = quiet_server(metrics_app(), host, port)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    log.info("metrics and health on http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        server.should_exit = True
        await task
