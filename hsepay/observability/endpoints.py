"""What every HTTP port of hsepay serves for operations: /metrics, /health/live, /health/ready, and the
middleware that counts requests, gives each a request id and binds it to the request's log lines."""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Callable
from typing import Any

from litestar import Controller, Litestar, Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from hsepay import log_context
from hsepay.observability import sources

__all__ = [
    "OBSERVED",
    "HealthController",
    "MetricsController",
    "http_observer",
    "metrics_app",
    "request_id_on_every_answer",
]

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")
OBSERVED = "hsepay.observed"
"""Set on a request's scope by the first observer that sees it (the orders API's fast lane observes
before Litestar does): each request is counted and given a request id once."""

server_span: Callable[[Scope, str], contextlib.AbstractContextManager[Any]] | None = None
"""Set by `hsepay.observability.tracing` when tracing is on: a server span around each request."""


def _new_request_id() -> bytes:
    # Not uuid4: os.urandom is a system call (measured 10+ µs here); a request id needs uniqueness, not secrecy.
    return b"%032x" % random.getrandbits(128)


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value if _REQUEST_ID.match(value) else _new_request_id()
    return _new_request_id()


_SCOPE_REQUEST_ID = "hsepay.request_id"


async def request_id_on_every_answer(message: Message, scope: Scope) -> None:
    """Litestar before_send hook (the outermost send): an answer rendered outside the observer — a
    refusal raised in a middleware (the guard's 401 and 429), an unknown route — gets the request's
    X-Request-ID too, the one the observer logged with, or the caller's, or a new one."""
    if message["type"] == "http.response.start" and scope["type"] == "http":
        _name(message, scope.get(_SCOPE_REQUEST_ID) or _request_id(scope))


def _name(start: Message, request_id: bytes) -> None:
    """Put X-Request-ID on a response start, once (the hook and an observer outside the app meet)."""
    headers = start.get("headers", ())
    if not any(name == b"x-request-id" for name, _ in headers):
        start["headers"] = [*headers, (b"x-request-id", request_id)]


def http_observer(service: str) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: request count and duration by route template, X-Request-ID, log context;
    once per request however many observers it passes."""
    from hsepay.observability.metrics import observe_request

    def middleware(app: ASGIApp) -> ASGIApp:
        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or OBSERVED in scope:
                await app(scope, receive, send)
                return
            scope[OBSERVED] = True  # type: ignore[literal-required]
            started = time.perf_counter()
            request_id = scope[_SCOPE_REQUEST_ID] = _request_id(scope)  # type: ignore[literal-required]
            status = 500

            async def answer(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    _name(message, request_id)
                await send(message)

            token = log_context.push(request_id=request_id.decode())
            try:
                if server_span is None:
                    await app(scope, receive, answer)
                else:
                    with server_span(scope, service):
                        await app(scope, receive, answer)
            finally:
                log_context.pop(token)
                route = scope.get("path_template") or "unmatched"
                observe_request(service, scope["method"], route, status, time.perf_counter() - started)

        return observed

    return middleware


class MetricsController(Controller):
    path = "/metrics"
    include_in_schema = False

    @get("/", cache=False)
    async def metrics(self) -> Response[bytes]:
        from hsepay.observability.metrics import CONTENT_TYPE, exposition

        return Response(await exposition(), media_type=CONTENT_TYPE)


class HealthController(Controller):
    """Live: the process answers. Ready: every source of the process is (database, broker, relay, consumer)."""

    path = "/health"
    tags = ["health"]
    include_in_schema = False

    @get("/live")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready")
    async def ready(self) -> Response[dict[str, Any]]:
        ok, report = await sources.check_ready()
        return Response({"status": "ok" if ok else "unavailable", "checks": report}, status_code=200 if ok else 503)


def metrics_app() -> Litestar:
    """The --metrics-port of worker roles: /metrics and /health/* of the whole process."""
    return Litestar(route_handlers=[MetricsController, HealthController], logging_config=None, openapi_config=None)
