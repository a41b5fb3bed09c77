"""Calling an upstream API: one pooled httpx client each, bounded waits, failures as problem+json."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from litestar import Request, Response

from hsepay import log_context
from hsepay.observability import tracing

__all__ = ["Upstream", "UpstreamFailed", "forward", "outgoing_headers", "problem", "returned"]

log = logging.getLogger(__name__)

# Request headers a client sends that the APIs act on, every copy of each (two Idempotency-Keys reach
# the API, which refuses them, as it would without the gateway); everything else stays here.
FORWARDED = ("authorization", "idempotency-key", "content-type", "accept", "traceparent", "tracestate")
# Response headers that describe the answer, and so reach the client. Everything else stays here:
# hop-by-hop headers (RFC 9110 §7.6.1: Connection and what it names, Keep-Alive, Transfer-Encoding,
# TE, Trailer, Upgrade, Proxy-*), cookies and whatever an upstream says about its own internals
# (Server, X-Powered-By...). The gateway sets its own Content-Length, Date, Server and X-Request-ID.
RETURNED = frozenset(
    {
        "location",
        "link",
        "allow",
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "ratelimit-policy",
        "www-authenticate",
        "idempotent-replayed",
        "cache-control",
        "vary",
        "content-language",
    }
)


@dataclass
class Upstream:
    name: str
    client: httpx.AsyncClient

    @classmethod
    def connect(cls, name: str, base_url: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None):
        return cls(
            name,
            httpx.AsyncClient(
                base_url=base_url,
                # Connecting is quick or the service is down: a short connect timeout tells 503 from 504 fast.
                timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
                transport=transport,
            ),
        )

    async def call(self, method: str, target: str, headers: list[tuple[bytes, bytes]], content: bytes | None = None):
        """The upstream's response; UpstreamFailed (503 or 504) when it does not answer in time."""
        from hsepay.observability.metrics import UPSTREAM_FAILURES

        try:
            return await self.client.request(method, target, headers=headers, content=content)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.NetworkError) as exc:
            UPSTREAM_FAILURES.labels(self.name, "unavailable").inc()
            log.warning("%s upstream unavailable for %s %s: %r", self.name, method, target.split("?")[0], exc)
            raise UpstreamFailed(503, "Upstream unavailable", f"the {self.name} service is unavailable") from None
        except httpx.TimeoutException:
            UPSTREAM_FAILURES.labels(self.name, "timeout").inc()
            log.warning("%s upstream timed out for %s %s", self.name, method, target.split("?")[0])
            raise UpstreamFailed(504, "Upstream timeout", f"the {self.name} service did not answer in time") from None


class UpstreamFailed(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail

    def response(self) -> Response[dict[str, Any]]:
        return problem(self.status, self.title, self.detail)


def problem(status: int, title: str, detail: str) -> Response[dict[str, Any]]:
    return Response(
        {"type": "about:blank", "status": status, "title": title, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def outgoing_headers(request: Request) -> list[tuple[bytes, bytes]]:
    """What the gateway sends upstream: the client's headers the APIs act on, the request id, the
    trace context, and X-Forwarded-For with the client's address appended (the APIs believe it only
    from HSEPAY_TRUSTED_PROXIES, where the gateway's address belongs).

    Values go on as the bytes the client sent: a header that is not ASCII (an Idempotency-Key of
    b"\\xd7\\xf8") is the API's to refuse with a 400, where httpx, given a str, raised on encoding it (a 500).
    """
    traced = {name.encode("latin-1"): value.encode("latin-1") for name, value in tracing.inject({}).items()}
    headers = [
        (name, value)
        for name, value in request.scope["headers"]
        if name.lower().decode("latin-1") in FORWARDED and name.lower() not in traced
    ]
    request_id = log_context.current().get("request_id")
    if request_id:
        headers.append((b"x-request-id", str(request_id).encode("latin-1", "replace")))
    headers.append((b"x-forwarded-for", forwarded_for(request).encode("latin-1")))
    return [*headers, *traced.items()]


def forwarded_for(request: Request) -> str:
    """The X-Forwarded-For chain the client sent (if any), then the client's own address."""
    peer = request.client.host if request.client else "unknown"
    sent = [value.decode("latin-1") for name, value in request.scope["headers"] if name == b"x-forwarded-for"]
    return ", ".join([*sent, peer])


def _rewrite(value: str) -> str:
    """A path the upstream returned (Location, Link) as the gateway's path for it."""
    if value.startswith("/"):
        return "/api" + value
    if value.startswith("</"):
        return "</api" + value[1:]
    return value


def returned(response: httpx.Response) -> Response[bytes]:
    """The upstream's answer as the gateway's: its status, body and the headers in RETURNED."""
    headers = {}
    for name, value in response.headers.items():
        if name not in RETURNED:
            continue
        headers[name] = _rewrite(value) if name in ("location", "link") else value
    return Response(
        response.content,
        status_code=response.status_code,
        headers=headers,
        media_type=response.headers.get("content-type", "application/octet-stream"),
    )


async def forward(request: Request, upstream: Upstream, path: str) -> Response:
    """Send the request to `path` of the upstream (query string and body unchanged) and return its answer."""
    query = request.scope.get("query_string", b"")
    target = f"{path}?{query.decode('latin-1')}" if query else path
    content = await request.body() if request.method in ("POST", "PUT", "PATCH") else None
    try:
        response = await upstream.call(request.method, target, outgoing_headers(request), content)
    except UpstreamFailed as failed:
        return failed.response()
    return returned(response)
