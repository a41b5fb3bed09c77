"""The fast lane of the orders API: `POST /orders` and `GET /order/{id}` answered ahead of Litestar in
the plain case that nearly every request is.

Measured on the 2-core box (docs/BENCHMARKS.md): granian alone answers a request for ~0.07 ms of
CPU; Litestar's layers around a handler (scope state, exception middleware, routing, request
object, signature model, dependency injection, body extraction, response rendering) cost about as
much as the work itself: ~0.06 ms of a POST's 0.21 ms in-process, ~0.03 ms of a GET's 0.11. A
checkout page polls `GET /order/{id}` every few milliseconds, so that is paid hundreds of times
per order.

`LanedLitestar.__call__` looks at the method and path first. A request for one of the two routes
passes the same observer (request id, metrics: `http_observer`) and the same guard (authentication,
rate limit, deadline: `Guard.admit` and `Guard.run`) that every request passes; its caller is then
known, and the lane answers the success case itself through the same `order_request`, group commit
and group read that the handlers use. Anything else goes on to Litestar unchanged, the body the
lane read replayed, the guard's decision and the observer's count carried in the scope so that
neither happens twice: a request with an Idempotency-Key, a body that is not JSON, too large,
without a length or invalid, another user's order, an unknown or malformed id, a CORS request, an
odd Host. So every refusal still comes from the handler and Litestar's exception handlers; an
error in the lane's own work (a database that went away) is re-raised inside Litestar
(`raise_caught`) to be rendered the same way.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Litestar
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from hsepay.api.bodies import is_json_media_type
from hsepay.api.guard import ADMITTED, CALLER, Guard
from hsepay.auth import Principal
from hsepay.errors import DomainError
from hsepay.idempotency import StoredResponse
from hsepay.ids import parse_uuid

__all__ = ["Lane", "LanedLitestar", "raise_caught"]

CAUGHT = "hsepay.lane.caught"
"""An exception the lane met in its own work, for `raise_caught` to raise inside Litestar."""
READ_TEMPLATES = {"/order/": "/order/{order_id:str}", "/orders/": "/orders/{order_id:str}"}
"""The route templates Litestar gives these paths (the metrics' `route` label)."""
PLACE_TEMPLATE = "/orders"
_HOST = re.compile(rb"\A[0-9A-Za-z.\-:\[\]]*\Z")
"""A Host the lane takes as it is (a stricter subset of what Litestar's router accepts); any other
goes to Litestar, which answers 400 for an invalid one."""

_JSON = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode

Read = Callable[[uuid.UUID], Awaitable[Any]]
"""The order of an id (a msgspec Struct with `user_id`), or None."""
Prepare = Callable[[Principal, bytes], object]
"""A body (and its caller) as the request to submit; raises what the handler would refuse it with."""
Submit = Callable[[object], Awaitable[object]]
"""Place the prepared order (the group commit): its StoredResponse."""


class Lane:
    """What the lane needs of the app: the guard and observer every request passes, the group read
    and the group commit, and the body limit."""

    def __init__(
        self,
        *,
        guard: Guard,
        observer: Callable[[ASGIApp], ASGIApp],
        read: Read,
        prepare: Prepare,
        submit: Submit,
        max_body: int,
        cors: bool,
    ) -> None:
        self.guard = guard
        self.observer = observer
        self.read = read
        self.prepare = prepare
        self.submit = submit
        self.max_body = max_body
        self.cors = cors


class LanedLitestar(Litestar):
    """A Litestar app whose two hottest routes take the lane first (see the module doc)."""

    lane: Lane | None = None

    def take_lane(self, lane: Lane) -> None:
        self.lane = lane
        self._observed_lane = lane.observer(self._admitted)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.lane is not None and scope["type"] == "http" and self._plain(scope):
            await self._observed_lane(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _plain(self, scope: Scope) -> bool:
        """Whether the request is one the lane may try: its route, and nothing Litestar's own layers
        would treat specially (CORS, an odd Host)."""
        method, path = scope["method"], scope["path"]
        if method == "GET":
            head, _, order_id = path.rpartition("/")
            template = READ_TEMPLATES.get(head + "/")
            if template is None or not order_id:
                return False
            scope["path_template"] = template  # type: ignore[typeddict-unknown-key]
            scope["path_params"] = {"order_id": order_id}
        elif method == "POST" and path == PLACE_TEMPLATE:
            scope["path_template"] = PLACE_TEMPLATE  # type: ignore[typeddict-unknown-key]
        else:
            return False
        cors = self.lane.cors  # type: ignore[union-attr]
        for name, value in scope["headers"]:
            if (name == b"host" and not _HOST.match(value)) or (name == b"origin" and cors):
                return False
        return True

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        assert lane is not None
        try:
            _, extra_headers = lane.guard.admit(scope)
        except HTTPException as refusal:
            scope[ADMITTED] = refusal  # type: ignore[literal-required]
            await super().__call__(scope, receive, send)
            return
        scope[ADMITTED] = True  # type: ignore[literal-required]
        work = self._read if scope["method"] == "GET" else self._place
        await lane.guard.run(work, scope, receive, send, extra_headers)

    async def _read(self, scope: Scope, receive: Receive, send: Send) -> None:
        order_id = parse_uuid(scope["path_params"]["order_id"])
        try:
            order = await self.lane.read(order_id) if order_id is not None else None  # type: ignore[union-attr]
        except Exception as exc:
            await self._fail(exc, scope, receive, send)
            return
        if order is None or not scope[CALLER].may_act_for(order.user_id):  # type: ignore[literal-required]
            await super().__call__(scope, receive, send)  # the handler answers 400 or 404
            return
        await _answer(send, 200, _encode(order), ())

    async def _place(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        assert lane is not None
        length = content_type = None
        repeated = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                repeated = repeated or length is not None
                length = value
            elif name == b"content-type":
                repeated = repeated or content_type is not None
                content_type = value
            elif name == b"idempotency-key":
                await super().__call__(scope, receive, send)  # the handler claims the key in the same transaction
                return
        if (
            repeated  # which of two values counts is the handler's call (it reads the first Content-Type)
            or length is None
            or not length.isdigit()
            or int(length) > lane.max_body
            or content_type is None
            or not is_json_media_type(content_type.decode("latin-1"))
        ):
            await super().__call__(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        try:
            request = lane.prepare(scope[CALLER], body)  # type: ignore[literal-required]
        except (ValidationException, DomainError, UnicodeDecodeError):
            # the handler refuses it, with the problem it always gave
            await super().__call__(scope, _replay(body, receive), send)
            return
        try:
            answer = await lane.submit(request)
        except Exception as exc:
            await self._fail(exc, scope, _replay(body, receive), send)
            return
        if not isinstance(answer, StoredResponse):  # without a key, a new order is the only answer
            raise TypeError(f"unexpected answer to an order without an Idempotency-Key: {answer!r}")
        headers = tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items())
        await _answer(send, answer.status_code, _encode(answer.body), headers)

    async def _fail(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the lane's own failure as Litestar answers the handler's: raised inside it."""
        scope[CAUGHT] = exc  # type: ignore[literal-required]
        await super().__call__(scope, receive, send)


def raise_caught(app: ASGIApp) -> ASGIApp:
    """Router middleware (after the guard): raise what the lane caught in its own work, so that
    Litestar's exception handlers answer it; any other request passes untouched."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        caught = scope.pop(CAUGHT, None)  # type: ignore[misc]
        if caught is not None:
            raise caught
        await app(scope, receive, send)

    return middleware


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) > 1 else chunks[0]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands Litestar the body the lane already read, then the real stream."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()  # type: ignore[return-value]

    return replayed


async def _answer(send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, _JSON, (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
