"""Calling an upstream API: one pooled httpx client each, bounded waits, failures as problem+json."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from litestar import Request, Response

from hsepay import log_context
from hsepay.observability import tracing

__all__ = ["Upstream", "UpstreamFailed", "forward", "problem"]

log = logging.getLogger(__name__)

# Request headers a client sends that the APIs act on; everything else stays at the gateway.
FORWARDED = ("authorization", "idempotency-key", "content-type", "accept", "traceparent", "tracestate")
# Response headers that describe the connection, not the answer; the gateway sets its own.
NOT_RETURNED = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "date",
    "server",
    "x-request-id",
}


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

    async def call(self, method: str, target: str, headers: dict[str, str], content: bytes | None = None):
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


def outgoing_headers(request: Request) -> dict[str, str]:
    headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
    request_id = log_context.current().get("request_id")
    if request_id:
        headers["x-request-id"] = request_id
    return tracing.inject(headers)


def _rewrite(value: str) -> str:
    """A path the upstream returned (Location, Link) as the gateway's path for it."""
    if value.startswith("/"):
        return "/api" + value
    if value.startswith("</"):
        return "</api" + value[1:]
    return value


def returned(response: httpx.Response) -> Response[bytes]:
    headers = {}
    for name, value in response.headers.items():
        if name in NOT_RETURNED or name == "content-type":
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
