"""The one HTTP/1.1 stack every way hsepay serves: granian, in worker processes (`hsepay serve`) or
embedded in the command's event loop (`hsepay up`, and the --metrics-port of workers).

Why granian everywhere (docs/decisions.md, "One HTTP stack"): probed with raw sockets, uvicorn's
h11 served the bytes after a body framed by both Content-Length and Transfer-Encoding as a second
request (smuggling behind a proxy that prefers Content-Length), accepted folded header lines and
never timed out a request whose headers never end; with httptools it answered an HTTP/0.9 request
line and still had no header timeout. Granian refuses folded lines and HTTP/0.9 and bounds header
reading (HTTP1Settings.header_read_timeout, which also bounds an idle keep-alive connection), and two
Content-Lengths. What it does not refuse, Content-Length with Transfer-Encoding, it reduces to a
chunked body (it drops Content-Length from the request and closes the connection after, as RFC 9112
§6.3 allows), so the app can no longer tell it apart: `refuse_unmeasured_bodies` refuses every body
that does not say its length up front (411 Length Required, RFC 9110 §15.5.12, and close). hsepay's
bodies are JSON documents of at most 64 KiB; its clients, the gateway's included, send Content-Length.
Measured in one loop (docs/SECURITY.md): granian embedded served 3.9x uvicorn-h11's requests per
second on a trivial app and 3.0x on a Litestar route, at 40 % or less of its CPU per request.
"""

from __future__ import annotations

import logging
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.server.embed import Server

__all__ = ["EmbeddedServer", "http1_settings", "refuse_unmeasured_bodies"]

# Granian logs its life (and, embedded, "Embedded server is experimental!") at info/warning level;
# hsepay says itself where it listens.
for _name in ("granian", "_granian", "granian.access"):
    logging.getLogger(_name).setLevel(logging.ERROR)

_REFUSAL = (
    b'{"status":411,"title":"Length Required","detail":"send the body with a Content-Length: a chunked body, '
    b'or one framed by both Content-Length and Transfer-Encoding, is refused"}'
)


def http1_settings(header_timeout: float) -> HTTP1Settings:
    """Keep-alive on; a request's headers (and an idle connection's next request) within `header_timeout`."""
    return HTTP1Settings(keep_alive=True, header_read_timeout=max(1, round(header_timeout * 1000)))


def refuse_unmeasured_bodies(app: Any) -> Any:
    """An ASGI app that answers 411, and closes, a request whose body is framed by Transfer-Encoding."""

    async def measured(scope, receive, send) -> None:
        if scope["type"] == "http" and any(name == b"transfer-encoding" for name, _ in scope["headers"]):
            await send(
                {
                    "type": "http.response.start",
                    "status": 411,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(_REFUSAL)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _REFUSAL})
            return
        await app(scope, receive, send)

    return measured


class EmbeddedServer:
    """One ASGI app served by granian inside the running event loop; several may run in one loop.

    `serve()` runs until `should_exit` is set; `started` says the app's lifespan started and the
    port listens.
    """

    def __init__(self, app: Any, host: str, port: int, *, header_timeout: float) -> None:
        self._started = False
        self._server = Server(
            self._watching_lifespan(refuse_unmeasured_bodies(app)),
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            http=HTTPModes.http1,
            http1_settings=http1_settings(header_timeout),
            websockets=False,
            backlog=2048,
            log_enabled=False,
        )

    def _watching_lifespan(self, app: Any) -> Any:
        async def watched(scope, receive, send) -> None:
            if scope["type"] != "lifespan":
                await app(scope, receive, send)
                return

            async def noting(message) -> None:
                if message["type"] == "lifespan.startup.complete":
                    self._started = True
                await send(message)

            await app(scope, receive, noting)

        return watched

    @property
    def started(self) -> bool:
        return self._started

    @property
    def should_exit(self) -> bool:
        return self._server.interrupt_signal

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if value:
            self._server.stop()

    async def serve(self) -> None:
        await self._server.serve()
