"""The orders API's fast lane (hsepay.api.lane) answers exactly what the Litestar handlers answer:
the same requests, good and bad, against the app with and without it give the same statuses,
bodies (ids and times aside), media types and headers, and the same rows in the database."""

from __future__ import annotations

import re
import uuid

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from hsepay.api.app import create_orders_app
from hsepay.config import SecuritySettings
from tests.tokens import SECRET, issue

SECURE = SecuritySettings(auth_secrets=(SECRET,), rate_limit=0)
LIMITED = SecuritySettings(auth_secrets=(SECRET,), rate_limit=1000, rate_burst=2000)  # headers on every answer
_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"
)
JSON = {"content-type": "application/json"}
_VARYING = {"ratelimit-remaining", "ratelimit-reset"}
"""Present in both or neither, values not compared: the bucket refills with time."""
_REQUEST_ID = "x-request-id"
"""Its value is new on each request: counted, not compared; both paths must give exactly one."""


def _shape(response, known: dict[str, str]) -> tuple:
    """Status, body and headers with every id and time replaced by a name given in order of
    appearance (so 'the id in the body is the id in the Location header' is still compared)."""

    def name(match: re.Match) -> str:
        return known.setdefault(match.group(0), f"<{len(known)}>")

    headers = [
        (h, "<varies>" if h in _VARYING else _VOLATILE.sub(name, v))
        for h, v in response.headers.multi_items()
        if h != _REQUEST_ID
    ]
    return (
        response.status_code,
        _VOLATILE.sub(name, response.text),
        headers,
        len(response.headers.get_list(_REQUEST_ID)),
    )


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
        # Idempotency-Key twice (400; repeated headers as the server hands them: _repeated below),
        # JSON by another name, a query string, an empty body, out-of-range values (a chunked body: 411 from
        # the server in front of both, tests/e2e/test_http_stack.py)
        (
            "POST",
            "/orders",
            {"json": body, "headers": [*owner_auth.items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]},
        ),
        (
            "POST",
            "/orders",
            {
                "content": msgspec.json.encode(body),
            },
        ),
        (
            "POST",
            "/orders",
            {
                "content": msgspec.json.encode(body),
            },
        ),
        (
            "POST",
            "/orders",
            {
                "content": msgspec.json.encode(body),
                "headers": {**owner_auth, "content-type": "application/vnd.order+json; charset=utf-8"},
            },
        ),
        ("POST", "/orders?user_id=x&amount=1", {"json": body, "headers": owner_auth}),
        ("POST", "/orders", {"content": b"", "headers": {**owner_auth, **JSON}}),
        ("POST", "/orders", {"json": {**body, "amount": 10**13}, "headers": owner_auth}),
        ("POST", "/orders", {"json": {**body, "amount": 7.0}, "headers": owner_auth}),
        ("POST", "/orders", {"json": {**body, "amount": True}, "headers": owner_auth}),
        ("POST", "/orders", {"json": {**body, "description": "d" * 1001}, "headers": owner_auth}),
        ("POST", "/orders", {"json": {**body, "user_id": "not-a-uuid"}, "headers": owner_auth}),
        ("POST", "/orders", {"content": b"[]", "headers": {**owner_auth, **JSON}}),
        ("POST", "/orders", {"content": b"\xef\xbb\xbf{}", "headers": {**owner_auth, **JSON}}),
        ("POST", "/orders", {"json": body, "headers": {"Authorization": "Bearer nonsense"}}),
        ("GET", f"/order/{order_id}", {"headers": owner_auth}),
        ("GET", f"/order/{order_id}?x=1", {"headers": owner_auth}),
        ("GET", f"/orders/{order_id.upper()}", {"headers": owner_auth}),
        ("GET", f"/order/{order_id}", {"headers": stranger_auth}),  # another user's: 404
        ("GET", f"/order/{uuid.uuid4()}", {"headers": owner_auth}),
        ("GET", "/order/not-a-uuid", {"headers": owner_auth}),
        ("GET", f"/order/{order_id}", {}),
    ]
    for method, path, kwargs in cases:
        shapes.append(_shape(await client.request(method, path, **kwargs), known))
    return shapes


async def _asgi(app, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple:
    """One request straight into the ASGI app, headers exactly as given (the test client joins
    repeated ones into one line; a server hands each over as it came)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver.local"), *headers], "client": ("127.0.0.1", 50000),
        "server": ("testserver.local", 80), "state": {},
    }  # fmt: skip
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
    names = sorted(
        name.decode()
        for name, _ in start["headers"]
        if name not in (b"x-request-id", b"ratelimit-remaining", b"ratelimit-reset")
    )
    return start["status"], _VOLATILE.sub("<v>", text), names, 1


async def _repeated(app, owner: uuid.UUID) -> list[tuple]:
    """Headers the lane reads that come twice: Content-Type (either order), Content-Length."""
    auth = (b"authorization", f"Bearer {issue(owner)}".encode())
    body = msgspec.json.encode({"user_id": str(owner), "amount": 7, "description": "lane"})
    length = (b"content-length", str(len(body)).encode())
    plain, json = (b"content-type", b"text/plain"), (b"content-type", b"application/json")
    return [
        await _asgi(app, "POST", "/orders", [auth, plain, json, length], body),
        await _asgi(app, "POST", "/orders", [auth, json, plain, length], body),
        await _asgi(app, "POST", "/orders", [auth, json, length, (b"content-length", b"99999")], body),
    ]


async def _run(engine, orders_db, fast_lane: bool, security: SecuritySettings) -> tuple:
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    app = create_orders_app(engine, orders_topic="orders", security=security, fast_lane=fast_lane)
    async with AsyncTestClient(app=app) as client:
        shapes = await _script(client, owner, stranger)
    raw = create_orders_app(engine, orders_topic="orders", security=security, fast_lane=fast_lane)
    async with raw.lifespan():  # in this test's loop, as _asgi calls it
        shapes += await _repeated(raw, owner)
    rows = sorted((o.amount, o.description, o.status) for o in await orders_db.orders() if o.user_id == owner)
    return shapes, rows


@pytest.mark.parametrize("security", [SECURE, LIMITED], ids=["no-limit", "rate-limited"])
async def test_the_lane_answers_as_the_handlers_do(orders_engine, orders_db, security):
    without, rows_without = await _run(orders_engine, orders_db, False, security)
    with_lane, rows_with = await _run(orders_engine, orders_db, True, security)
    for i, (handler, lane) in enumerate(zip(without, with_lane, strict=True)):
        assert handler[:3] == lane[:3], f"case {i}: handler {handler} != lane {lane}"
        assert (handler[3], lane[3]) == (1, 1), f"case {i}: {handler[3]} / {lane[3]} X-Request-ID headers"
    # the plain one, the keyed one, +json, the one with a query string, and two of _repeated (the
    # handler reads the first Content-Type and the body as it comes; the server refuses two lengths)
    assert rows_without == rows_with == [(7, "lane", "created")] * 6
    assert len(await orders_db.outbox()) == 12  # one payment request per order, both runs


async def test_the_lane_answers_the_plain_cases_and_hands_on_the_rest(orders_engine, monkeypatch):
    """Which requests reach Litestar at all: none of the plain ones; every other one, once."""
    reached: list[tuple[str, str]] = []
    through = Litestar.__call__

    async def counting(self, scope, receive, send):
        if scope["type"] == "http":
            reached.append((scope["method"], scope["path"]))
        await through(self, scope, receive, send)

    monkeypatch.setattr(Litestar, "__call__", counting)
    owner = uuid.uuid4()
    auth = {"Authorization": f"Bearer {issue(owner)}"}
    body = {"user_id": str(owner), "amount": 7}
    app = create_orders_app(orders_engine, orders_topic="orders", security=SECURE)
    async with AsyncTestClient(app=app) as client:
        placed = await client.post("/orders", json=body, headers=auth)
        order_id = placed.json()["id"]
        got = await client.get(f"/order/{order_id}", headers=auth)
        also = await client.get(f"/orders/{order_id}", headers=auth)
        assert (placed.status_code, got.status_code, also.status_code) == (202, 200, 200)
        assert [r.headers.get_list("x-request-id") != [] for r in (placed, got, also)] == [True] * 3
        assert reached == []  # all three answered by the lane
        handed_on = [
            ("POST", "/orders", {"json": body, "headers": {**auth, "Idempotency-Key": "k"}}),
            ("POST", "/orders", {"json": {**body, "amount": 0}, "headers": auth}),
            ("POST", "/orders", {"json": body}),  # no token: the guard's 401, rendered by Litestar
            ("GET", f"/order/{uuid.uuid4()}", {"headers": auth}),
            ("GET", "/order/nope", {"headers": auth}),
            ("GET", f"/order/{order_id}/", {"headers": auth}),
            ("GET", "/orders", {"headers": auth}),
        ]
        for method, path, kwargs in handed_on:
            response = await client.request(method, path, **kwargs)
            assert len(response.headers.get_list("x-request-id")) == 1, (method, path)  # observed once
        assert reached == [(method, path) for method, path, _ in handed_on]
