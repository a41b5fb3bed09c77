"""The --metrics-port of worker roles: /metrics, /health/live and /health/ready on their own port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator

from hsepay.config import ConfigError

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

    _check_free(host, port)  # uvicorn would sys.exit() from inside the event loop instead
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


def _check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"--metrics-port: {host}:{port} is not available ({exc.strerror})") from None
