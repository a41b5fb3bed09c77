"""The guard in front of every business route: who is calling, how often, and for how long.

One ASGI middleware, in this order:
1. authentication (auth on): the bearer token is verified (hsepay.auth); no token or a bad one is a
   401 with `WWW-Authenticate`. Auth off: every caller is `EVERYONE`, at the cost of one dict write;
2. rate limit: a token bucket per caller — the token's subject when authenticated, else the client
   IP (X-Forwarded-For only from HSEPAY_TRUSTED_PROXIES); over it, 429 with RateLimit headers and
   Retry-After. Failed authentications count against the client IP, so guessing costs too;
3. deadline: a request that runs past HSEPAY_REQUEST_TIMEOUT is cancelled and answered 503 (408 if
   it was still waiting for the client's body), never left hanging.

Handlers read the caller with `caller_of(request)`; a route the guard did not run on has no caller,
and asking for one there is a bug (KeyError), never a silent "everyone".
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus

import msgspec
from litestar import Request
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from hsepay.auth import EVERYONE, InvalidToken, Principal, TokenVerifier
from hsepay.config import SecuritySettings

__all__ = ["ADMITTED", "CALLER", "Guard", "RateLimiter", "caller_of", "client_ip"]

log = logging.getLogger(__name__)

CALLER = "hsepay.caller"
ADMITTED = "hsepay.admitted"
"""Set by the orders API's fast lane (hsepay.api.lane), which admits a request before Litestar sees
it: (caller, rate-limit headers), or the refusal to raise. The guard then neither authenticates nor
charges the limit a second time. A client cannot set it: the scope is the server's."""
REALM = 'Bearer realm="hsepay"'


def caller_of(request: Request) -> Principal:
    """The caller the guard established for this request."""
    return request.scope[CALLER]  # type: ignore[literal-required]


# --- rate limit -----------------------------------------------------------------------------------


@dataclass
class RateLimiter:
    """Token buckets: `rate` requests per second per key, up to `burst` at once; bounded memory."""

    rate: float
    burst: int
    max_keys: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[object, tuple[float, float]] = field(default_factory=dict)

    def hit(self, key: object) -> tuple[bool, float]:
        """(allowed?, tokens left after this request)."""
        now = self.clock()
        found = self._buckets.pop(key, None)  # popped and re-inserted: the dict stays in LRU order
        tokens = self.burst if found is None else min(self.burst, found[0] + (now - found[1]) * self.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:  # forget the longest-idle caller (it would be full by now)
            del self._buckets[next(iter(self._buckets))]
        return allowed, tokens

    def headers(self, tokens: float) -> list[tuple[bytes, bytes]]:
        """RateLimit headers (IETF httpapi draft, as Litestar names them) for a response."""
        refill = (self.burst - tokens) / self.rate
        return [
            (b"ratelimit-policy", f"{self.burst};w={math.ceil(self.burst / self.rate)}".encode()),
            (b"ratelimit-limit", str(self.burst).encode()),
            (b"ratelimit-remaining", str(int(tokens)).encode()),
            (b"ratelimit-reset", str(math.ceil(refill)).encode()),
        ]

    def retry_after(self, tokens: float) -> int:
        return max(1, math.ceil((1 - tokens) / self.rate))


# --- client address ----------------------------------------------------------------------------------


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the peer, or — when the peer is a trusted proxy — the right-most
    X-Forwarded-For entry that is not itself a trusted proxy (entries left of it are client-written)."""
    if peer is None:
        return "unknown"
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _is_trusted(hop, trusted):
            return hop if _is_address(hop) else peer
    return peer


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


# --- the middleware --------------------------------------------------------------------------------


class Guard:
    """Shared state of the guard for one app; `middleware` wraps each guarded route with it."""

    def __init__(self, security: SecuritySettings) -> None:
        self.verifier = (
            TokenVerifier(security.auth_secrets, max_ttl=security.auth_max_ttl) if security.auth_enabled else None
        )
        self.limiter = (
            RateLimiter(security.rate_limit, security.rate_burst or 2 * security.rate_limit)
            if security.rate_limit
            else None
        )
        self.trusted_proxies = security.trusted_proxies
        self.timeout = security.request_timeout

    def middleware(self, app: ASGIApp) -> ASGIApp:
        guard = self

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            admitted = scope.get(ADMITTED)
            if admitted is None:
                _, extra_headers = guard.admit(scope)
                await guard.run(app, scope, receive, send, extra_headers)
            elif isinstance(admitted, Exception):
                raise admitted  # the fast lane's refusal, rendered here like any other
            else:
                await app(scope, receive, send)  # admitted by the fast lane, which runs the deadline

        return guarded

    def admit(self, scope: Scope) -> tuple[Principal, list[tuple[bytes, bytes]]]:
        """Authenticate and charge the rate limit, once per request; the caller is put in the scope.
        Raises NotAuthorizedException (401) or TooManyRequestsException (429)."""
        caller = self.authenticate(scope)
        extra_headers = self.limit(scope, caller)
        scope[CALLER] = caller  # type: ignore[literal-required]
        return caller, extra_headers

    def authenticate(self, scope: Scope) -> Principal:
        if self.verifier is None:
            return EVERYONE
        authorization = _header(scope, b"authorization")
        try:
            return self.verifier.verify(_bearer_token(authorization))
        except InvalidToken as exc:
            refusal = exc
        except Exception as exc:  # a token no rule foresaw: still the caller's problem, never a 500
            log.warning("bearer token refused by an unexpected %s", type(exc).__name__)
            refusal = InvalidToken("the token is malformed")
        if self.limiter is not None:  # failed attempts count against the address they come from
            allowed, tokens = self.limiter.hit(self.address(scope))
            if not allowed:
                raise self._too_many(tokens)
        challenge = REALM if refusal.missing else f'{REALM}, error="invalid_token"'
        raise NotAuthorizedException(detail=str(refusal), headers={"WWW-Authenticate": challenge})

    def limit(self, scope: Scope, caller: Principal) -> list[tuple[bytes, bytes]]:
        if self.limiter is None:
            return []
        key = caller.subject if caller.subject is not None else self.address(scope)
        allowed, tokens = self.limiter.hit(key)
        if not allowed:
            raise self._too_many(tokens)
        return self.limiter.headers(tokens)

    def address(self, scope: Scope) -> str:
        peer = scope.get("client")
        forwarded = _header(scope, b"x-forwarded-for") if self.trusted_proxies else None
        return client_ip(peer[0] if peer else None, forwarded, self.trusted_proxies)

    def _too_many(self, tokens: float) -> TooManyRequestsException:
        assert self.limiter is not None
        headers = {name.decode(): value.decode() for name, value in self.limiter.headers(tokens)}
        headers["Retry-After"] = str(self.limiter.retry_after(tokens))
        return TooManyRequestsException(detail="too many requests from this caller; retry later", headers=headers)

    async def run(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, extra_headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Run the route under the deadline; answer 503 (or 408) if it passes before a response began."""
        state = {"started": False, "receiving": False}

        async def timed_receive() -> Message:
            state["receiving"] = True  # stays set if the deadline cancels the wait
            message = await receive()
            state["receiving"] = False
            return message

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if extra_headers:
                    message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                await app(scope, timed_receive, send_with_headers)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning(
                "%s %s passed the %gs request timeout%s",
                scope["method"],
                scope["path"],
                self.timeout,
                " (waiting for the body)" if state["receiving"] else "",
            )
            if state["started"]:
                return  # the response is under way and cannot be replaced; the connection ends
            status, detail = (
                (408, "the request body did not arrive in time")
                if state["receiving"]
                else (503, "the request took too long; retry later")
            )
            await _send_problem(send_with_headers, status, detail)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer_token(authorization: str | None) -> str:
    if authorization is None:
        raise InvalidToken("a bearer token is required (Authorization: Bearer <token>)", missing=True)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("the Authorization header must be 'Bearer <token>'")
    return token.strip()


async def _send_problem(send: Send, status: int, detail: str) -> None:
    body = msgspec.json.encode({"status": status, "title": HTTPStatus(status).phrase, "detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
