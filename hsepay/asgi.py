"""The ASGI entry point of `hsepay serve`: the API served by worker processes, each building its own app.

`hsepay serve SERVICE --workers N` checks the database once, then hands the port to the ASGI server
(granian, `serve_api_processes`), which starts N processes; each calls `application()` and builds
its own engine, its own group commit and its own logging, from the same HSEPAY_* environment as the
parent.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from hsepay.heap import settle_after_startup
from hsepay.lifetime import die_with

__all__ = ["PARENT_VARIABLE", "SERVICE_VARIABLE", "application", "serve_api_processes"]

log = logging.getLogger(__name__)

SERVICE_VARIABLE = "HSEPAY_SERVE_SERVICE"
"""Which service's API the worker builds; set by `hsepay serve` for its worker processes."""
PARENT_VARIABLE = "HSEPAY_SERVE_PID"
"""The pid of the `hsepay serve` process whose workers these are."""


def application() -> Any:
    parent = os.environ.get(PARENT_VARIABLE)
    if parent:
        die_with(int(parent))  # a kill -9 of `hsepay serve` takes its workers with it (hsepay.lifetime)
    from hsepay import registry
    from hsepay.bootstrap import build_unchecked
    from hsepay.config import get_settings
    from hsepay.observability import logs, tracing

    observability = logs.settings_or_defaults()
    logs.configure(observability.log_level, observability.log_format)
    tracing.enable_from(observability)
    from hsepay.httpserver import refuse_unmeasured_bodies

    spec = registry.get(os.environ[SERVICE_VARIABLE])
    app = build_unchecked(get_settings(), (spec,), apps=True)[spec.name].app
    assert app is not None
    served = refuse_unmeasured_bodies(app)
    settle_after_startup()
    return served


def serve_api_processes(service: str, *, host: str, port: int, workers: int, header_timeout: float) -> None:
    """Serve one API with `workers` processes under granian (blocks until SIGINT/SIGTERM).

    Measured on this 2-core box, POST /orders at 64 connections with every role running (docs/
    BENCHMARKS.md): uvicorn (uvloop, httptools) 1,107 req/s with one process and 1,124 with two;
    granian 1,409 and 1,563. Each worker builds its app with `hsepay.asgi.application`.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    from hsepay.httpserver import http1_settings

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
        http1_settings=http1_settings(header_timeout),
        websockets=False,
        backlog=2048,
        respawn_failed_workers=True,
        log_enabled=False,
    ).serve()
