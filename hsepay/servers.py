"""The HTTP servers of hsepay's roles: uvicorn for the servers of one event loop (`hsepay up`, the
--metrics-port of workers), granian for the API worker processes of `hsepay serve`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator

import uvicorn

from hsepay.config import ConfigError
from hsepay.ports import port_problem

__all__ = ["KEEP_ALIVE", "quiet_server", "serve_api_processes", "serving_metrics"]

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


def serve_api_processes(service: str, *, host: str, port: int, workers: int) -> None:
    """Serve one API with `workers` processes under granian (blocks until SIGINT/SIGTERM).

    Measured on this 2-core box, POST /orders at 64 connections with every role running (docs/
    BENCHMARKS.md): uvicorn (uvloop, httptools) 1,107 req/s with one process and 1,124 with two;
    granian 1,409 and 1,563. Each worker builds its app with `hsepay.asgi.application`.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    from hsepay.asgi import PARENT_VARIABLE, SERVICE_VARIABLE

    os.environ[SERVICE_VARIABLE] = service
    os.environ[PARENT_VARIABLE] = str(os.getpid())  # its workers end with it (hsepay.asgi)
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # One /metrics for all the workers of this port (prometheus-client's multiprocess mode).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=f"hsepay-{service}-metrics-")
    log.info("%s API on http://%s:%d with %d worker process(es) (docs: /schema/swagger)", service, host, port, workers)
    Granian(
        "hsepay.asgi:application",
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
