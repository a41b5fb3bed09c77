"""The HTTP servers of one event loop: the APIs of `hsepay up` and `hsepay serve --with-workers`, and the
--metrics-port of workers, each served by granian embedded in the loop (hsepay.httpserver: the one
HTTP stack). (`hsepay serve`'s worker processes run under granian too: `hsepay.asgi`.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from hsepay.config import ConfigError
from hsepay.httpserver import EmbeddedServer
from hsepay.ports import port_problem

__all__ = ["DEFAULT_HEADER_TIMEOUT", "quiet_server", "serving_metrics"]

log = logging.getLogger(__name__)

DEFAULT_HEADER_TIMEOUT = 30.0
"""HSEPAY_HEADER_TIMEOUT's default. It also bounds an idle keep-alive connection, and must stay above
clients' pool expiry: at uvicorn's former 5 s, equal to httpx's, the two raced and a reused
connection met a reset (reproduced: 20 resets in 14,600 requests at 64 connections)."""


def quiet_server(app, host: str, port: int, header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> EmbeddedServer:
    """`app` served in this event loop by hsepay's one HTTP stack; it logs nothing of its own."""
    return EmbeddedServer(app, host, port, header_timeout=header_timeout)


@contextlib.asynccontextmanager
async def serving_metrics(host: str, port: int | None) -> AsyncIterator[None]:
    """Serve the process's metrics and health on host:port while the block runs (port None: nothing)."""
    if port is None:
        yield
        return
    from hsepay.observability.endpoints import metrics_app

    problem = port_problem(host, port)  # one line and exit 2, not a bind error from inside the server task
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
