"""The --metrics-port of worker roles: /metrics, /health/live and /health/ready on their own port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

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

    server = quiet_server(metrics_app(), host, port)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():  # uvicorn could not bind (it exits): stop here rather than run unobserved
        with contextlib.suppress(SystemExit, Exception):
            await task
        from hsepay.config import ConfigError

        raise ConfigError(f"--metrics-port: cannot listen on {host}:{port} (in use?)")
    log.info("metrics and health on http://%s:%d/metrics", host, port)
    try:
        yield
    finally:
        server.should_exit = True
        await task
