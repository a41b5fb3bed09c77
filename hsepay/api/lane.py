"""The fast lane of the orders API: `POST /orders` and `GET /order/{id}` without Litestar's per-request
machinery, for the plain case that nearly every request is.

Measured on the 2-core box (docs/BENCHMARKS.md), Litestar's handler path (request object, signature
model, dependency injection, body extraction, response rendering) cost about as much CPU as the
work itself: granian alone answers a request for ~0.07 ms, a bare Litestar handler for ~0.14 ms
(GET) and ~0.19 ms (POST with a JSON body). A checkout page polls `GET /order/{id}` every few
milliseconds, so that overhead is paid hundreds of times per order.

The lane is a middleware of the guarded router, so it runs after Litestar's routing and exception
handling, after the observer (request id, metrics) and after the guard (the caller is known, the
rate limit charged, the deadline running): none of that is bypassed. It answers the success case
itself, through the same `place_order` and group read the handlers use. Anything else goes to the
route's handler unchanged (its body replayed), which stays the complete implementation: a request
with an Idempotency-Key, a body that is not JSON, too large, without a length or invalid, another
user's order, an unknown or malformed id. So every refusal comes from the one place it always did.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import msgspec
from litestar.exceptions import ValidationException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from hsepay.api.bodies import is_json_media_type
from hsepay.api.guard import CALLER
from hsepay.auth import Principal
from hsepay.errors import DomainError
from hsepay.idempotency import StoredResponse
from hsepay.ids import parse_uuid

__all__ = ["LANE", "PLACE_ORDER", "READ_ORDER", "orders_lane"]

LANE = "hsepay.lane"
"""The `opt` key of a route handler that names its lane."""
READ_ORDER = "read_order"
PLACE_ORDER = "place_order"

_JSON = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode

Read = Callable[[uuid.UUID], Awaitable[object | None]]
"""The order of an id (a msgspec Struct with `user_id`), or None."""
Prepare = Callable[[Principal, bytes], object]
"""A body (and its caller) as the request to submit; raises what the handler would refuse it with."""
Submit = Callable[[object], Awaitable[object]]
"""Place the prepared order (the group commit): its StoredResponse."""


def orders_lane(read: Read, prepare: Prepare, submit: Submit, max_body: int) -> Callable[[ASGIApp], ASGIApp]:
    """The lane middleware, for the guarded router of the orders API."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def lane(scope: Scope, receive: Receive, send: Send) -> None:
            handler = scope.get("route_handler")
            kind = handler.opt.get(LANE) if handler is not None else None
            if kind == READ_ORDER:
                await _read(app, scope, receive, send, read)
            elif kind == PLACE_ORDER and scope["method"] == "POST":
                await _place(app, scope, receive, send, prepare, submit, max_body)
            else:
                await app(scope, receive, send)

        return lane

    return middleware


async def _read(app: ASGIApp, scope: Scope, receive: Receive, send: Send, read: Read) -> None:
    order_id = parse_uuid(scope["path_params"].get("order_id", ""))
    order = await read(order_id) if order_id is not None else None
    if order is None or not scope[CALLER].may_act_for(order.user_id):  # type: ignore[literal-required]
        await app(scope, receive, send)  # the handler answers 400 or 404
        return
    await _answer(send, 200, _encode(order), ())


async def _place(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, prepare: Prepare, submit: Submit, max_body: int
) -> None:
    length = content_type = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            content_type = value
        elif name == b"idempotency-key":
            await app(scope, receive, send)  # the handler claims the key in the same transaction
            return
    if (
        length is None
        or not length.isdigit()
        or int(length) > max_body
        or content_type is None
        or not is_json_media_type(content_type.decode("latin-1"))
    ):
        await app(scope, receive, send)
        return
    body = await _read_body(receive)
    if body is None:
        return  # the client went away
    try:
        request = prepare(scope[CALLER], body)  # type: ignore[literal-required]
    except (ValidationException, DomainError, UnicodeDecodeError):
        await app(scope, _replay(body, receive), send)  # the handler refuses it, with the problem it always gave
        return
    answer = await submit(request)
    if not isinstance(answer, StoredResponse):  # without a key, a new order is the only answer
        raise TypeError(f"unexpected answer to an order without an Idempotency-Key: {answer!r}")
    headers = tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items())
    await _answer(send, answer.status_code, _encode(answer.body), headers)


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
    """A receive that hands the handler the body the lane already read, then the real stream."""
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
