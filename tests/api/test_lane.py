"""The orders API's fast lane (hsepay.api.lane) answers exactly what the Litestar handlers answer:
the same requests, good and bad, against the app with and without it give the same statuses,
bodies (ids and times aside), media types and headers, and the same rows in the database."""

from __future__ import annotations

import re
import uuid

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from hsepay.api.app import create_orders_app
from hsepay.api.guard import CALLER
from hsepay.api.lane import LANE, PLACE_ORDER, READ_ORDER, orders_lane
from hsepay.auth import EVERYONE
from hsepay.config import SecuritySettings
from hsepay.idempotency import StoredResponse
from tests.tokens import SECRET, issue

SECURE = SecuritySettings(auth_secrets=(SECRET,), rate_limit=0)
_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"
)
JSON = {"content-type": "application/json"}
_COMPARED_HEADERS = ("content-type", "content-length", "location", "www-authenticate", "allow")


def _shape(response, known: dict[str, str]) -> tuple:
    """Status, body and headers with every id and time replaced by a name given in order of
    appearance (so 'the id in the body is the id in the Location header' is still compared)."""

    def name(match: re.Match) -> str:
        return known.setdefault(match.group(0), f"<{len(known)}>")

    headers = {h: _VOLATILE.sub(name, response.headers.get(h, "")) for h in _COMPARED_HEADERS}
    return response.status_code, _VOLATILE.sub(name, response.text), headers


async def _script(client, owner: uuid.UUID, stranger: uuid.UUID) -> list[tuple]:
    """Every case the lane takes or hands on, in one sequence; the shapes of the answers."""
    known: dict[str, str] = {}
    owner_auth = {"Authorization": f"Bearer {issue(owner)}"}
    stranger_auth = {"Authorization": f"Bearer {issue(stranger)}"}
    body = {"user_id": str(owner), "amount": 7, "description": "lane"}
    shapes = []
    placed = await client.post("/orders", json=body, headers=owner_auth)
    shapes.append(_shape(placed, known))
    order_id = placed.json()["id"]
    cases = [
        ("POST", "/orders", {"json": {**body, "amount": "7"}, "headers": owner_auth}),  # no coercion
        ("POST", "/orders", {"json": {**body, "extra": 1}, "headers": owner_auth}),
        ("POST", "/orders", {"json": {**body, "amount": 0}, "headers": owner_auth}),
        ("POST", "/orders", {"json": {**body, "description": "a\x00b"}, "headers": owner_auth}),
        ("POST", "/orders", {"json": body, "headers": stranger_auth}),  # someone else's user_id: 403
        ("POST", "/orders", {"json": body}),  # no token: 401
        (
            "POST",
            "/orders",
            {"content": b'{"user_id": 1', "headers": {**owner_auth, "content-type": "application/json"}},
        ),
        ("POST", "/orders", {"content": b"{}", "headers": {**owner_auth, "content-type": "text/plain"}}),
        ("POST", "/orders", {"content": b"x" * 70_000, "headers": {**owner_auth, **JSON}}),
        ("POST", "/orders", {"json": body, "headers": {**owner_auth, "Idempotency-Key": "k1"}}),
        ("POST", "/orders", {"json": body, "headers": {**owner_auth, "Idempotency-Key": "k1"}}),  # replay
        ("POST", "/orders", {"json": {**body, "amount": 8}, "headers": {**owner_auth, "Idempotency-Key": "k1"}}),
        ("GET", f"/order/{order_id}", {"headers": owner_auth}),
        ("GET", f"/orders/{order_id.upper()}", {"headers": owner_auth}),
        ("GET", f"/order/{order_id}", {"headers": stranger_auth}),  # another user's: 404
        ("GET", f"/order/{uuid.uuid4()}", {"headers": owner_auth}),
        ("GET", "/order/not-a-uuid", {"headers": owner_auth}),
        ("GET", f"/order/{order_id}", {}),
    ]
    for method, path, kwargs in cases:
        shapes.append(_shape(await client.request(method, path, **kwargs), known))
    return shapes


async def _run(engine, orders_db, fast_lane: bool) -> tuple:
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    app = create_orders_app(engine, orders_topic="orders", security=SECURE, fast_lane=fast_lane)
    async with AsyncTestClient(app=app) as client:
        shapes = await _script(client, owner, stranger)
    rows = sorted((o.amount, o.description, o.status) for o in await orders_db.orders() if o.user_id == owner)
    return shapes, rows


async def test_the_lane_answers_as_the_handlers_do(orders_engine, orders_db):
    without, rows_without = await _run(orders_engine, orders_db, fast_lane=False)
    with_lane, rows_with = await _run(orders_engine, orders_db, fast_lane=True)
    for i, (handler, lane) in enumerate(zip(without, with_lane, strict=True)):
        assert handler == lane, f"case {i}: handler {handler} != lane {lane}"
    assert rows_without == rows_with == [(7, "lane", "created"), (7, "lane", "created")]  # plain and keyed
    assert len(await orders_db.outbox()) == 4  # one payment request per order, both runs


class _Route:
    def __init__(self, lane: str) -> None:
        self.opt = {LANE: lane}


async def _through_lane(scope_extra: dict, body: bytes = b"", *, found: object = None, refuse: bool = False) -> tuple:
    """One request through the lane alone: (did the handler run?, what was sent)."""
    handled, sent = [], []

    async def handler(scope, receive, send):
        handled.append((await receive())["body"] if scope["method"] == "POST" else None)

    async def read(order_id):
        return found

    def prepare(caller, raw):
        if refuse:
            raise ValueError("not a lane error")  # anything but a refusal the handler makes escapes
        return raw

    async def submit(prepared):
        return StoredResponse(202, {"ok": True}, {"Location": "/orders/x"})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    lane = orders_lane(read, prepare, submit, max_body=100)(handler)
    scope = {"type": "http", "headers": [], "path_params": {}, CALLER: EVERYONE, **scope_extra}
    await lane(scope, receive, send)
    return handled, sent


async def test_the_lane_answers_the_plain_cases_and_hands_on_the_rest():
    class Found(msgspec.Struct):
        user_id: uuid.UUID

    json = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    post = {"method": "POST", "route_handler": _Route(PLACE_ORDER), "headers": json}
    handled, sent = await _through_lane(post, b"{}")
    assert handled == [] and sent[0]["status"] == 202 and (b"location", b"/orders/x") in sent[0]["headers"]
    for headers in (
        [*json, (b"idempotency-key", b"k")],  # the handler claims the key
        [(b"content-type", b"application/json")],  # no length
        [(b"content-type", b"application/json"), (b"content-length", b"101")],  # over the limit
        [(b"content-type", b"text/plain"), (b"content-length", b"2")],
    ):
        handled, sent = await _through_lane({**post, "headers": headers}, b"{}")
        assert handled == [b"{}"] and sent == [], headers  # the handler got the body untouched
    get = {"method": "GET", "route_handler": _Route(READ_ORDER), "path_params": {"order_id": str(uuid.uuid4())}}
    handled, sent = await _through_lane(get, found=Found(uuid.uuid4()))
    assert handled == [] and sent[0]["status"] == 200
    for extra in ({}, {"path_params": {"order_id": "nope"}}):  # unknown order, malformed id
        handled, sent = await _through_lane({**get, **extra}, found=None)
        assert handled == [None] and sent == []
    with pytest.raises(ValueError):
        await _through_lane(post, b"{}", refuse=True)
