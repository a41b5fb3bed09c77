"""The HTTP servers of one event loop (uvicorn): the APIs of `hsepay up` and `hsepay serve --with-workers`,
and the --metrics-port of workers. (`hsepay serve`'s worker processes run under granian: `hsepay.asgi`.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn

from hsepay.config import ConfigError
from hsepay.ports import port_problem

__all__ = ["KEEP_ALIVE", "quiet_server", "serving_metrics"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


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


@contextlib.asynccontextmanager
async def serving_metrics(host: str, port: int | None) -> AsyncIterator[None]:
    """Serve the process's metrics and health on host:port while the block runs (port None: nothing)."""
    if port is None:
        yield
        return
    from hsepay.observability.endpoints import metrics_app

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
