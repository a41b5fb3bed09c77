"""The gateway: the seed's /api paths forwarded to the real APIs, /api/summary as JSON, bounded failures."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import uuid

import httpx
import pytest_asyncio
from litestar.testing import AsyncTestClient

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.config import GatewaySettings, SecuritySettings
from hsepay.gateway import create_gateway_app
from tests.e2e.conftest import free_port
from tests.ops.helpers import value
from tests.tokens import SECRET

PROBLEM = "application/problem+json"


class Recording(httpx.AsyncBaseTransport):
    """The real API app over ASGI (no socket), keeping the requests the gateway sent it."""

    def __init__(self, app) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


@pytest_asyncio.fixture
async def silent_upstream():
    """A service that accepts connections and never answers: the slow upstream (timeouts need a socket)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest_asyncio.fixture
async def upstreams(payments_engine, orders_engine):
    return {
        "payments": Recording(create_payments_app(payments_engine)),
        "orders": Recording(create_orders_app(orders_engine, orders_topic="orders")),
    }


@pytest_asyncio.fixture
async def gateway(upstreams):
    async with AsyncTestClient(app=create_gateway_app(GatewaySettings(), transports=upstreams)) as client:
        yield client


async def test_summary_is_one_json_object_with_balance_and_the_users_orders(gateway):
    user, other = str(uuid.uuid4()), str(uuid.uuid4())
    for who in (user, other):
        assert (await gateway.post("/api/accounts", json={"user_id": who})).status_code == 201
        assert (await gateway.post(f"/api/accounts/{who}/deposit", json={"amount": 700})).status_code == 200
    placed = [(await gateway.post("/api/orders", json={"user_id": user, "amount": n})).json()["id"] for n in (1, 2)]
    await gateway.post("/api/orders", json={"user_id": other, "amount": 3})

    summary = await gateway.get("/api/summary", params={"user_id": user})
    assert summary.status_code == 200
    assert summary.headers["content-type"].startswith("application/json")
    body = summary.json()
    assert body["user_id"] == user and body["balance"] == 700  # no workers here: orders not debited yet
    assert [o["id"] for o in body["orders"]] == placed[::-1]  # that user's only, newest first
    assert all(o["status"] == "created" and o["user_id"] == user for o in body["orders"])
    assert body["next"] is None

    first = (await gateway.get("/api/summary", params={"user_id": user, "limit": 1})).json()
    assert [o["id"] for o in first["orders"]] == [placed[1]] and first["next"].startswith("/api/summary?")
    second = (await gateway.get(first["next"])).json()
    assert [o["id"] for o in second["orders"]] == [placed[0]] and second["next"] is None

    unknown = (await gateway.get("/api/summary", params={"user_id": str(uuid.uuid4())})).json()
    assert unknown["balance"] is None and unknown["orders"] == []


async def test_summary_refuses_a_missing_or_malformed_user_id(gateway):
    for params in ({}, {"user_id": "nope"}):
        response = await gateway.get("/api/summary", params=params)
        assert response.status_code == 400 and response.headers["content-type"].startswith(PROBLEM)


async def test_seed_paths_forward_headers_and_answers_unchanged(gateway, upstreams):
    user = str(uuid.uuid4())
    created = await gateway.post(
        "/api/accounts",
        json={"user_id": user},
        headers={"Authorization": "Bearer abc.def", "X-Request-ID": "req-42", "Cookie": "kept=here"},
    )
    assert created.status_code == 201 and created.headers["x-request-id"] == "req-42"
    sent = upstreams["payments"].requests[-1]
    assert sent.url.path == "/accounts"
    assert sent.headers["authorization"] == "Bearer abc.def" and sent.headers["x-request-id"] == "req-42"
    assert "cookie" not in sent.headers

    deposit = {"amount": 100}
    first = await gateway.post(f"/api/accounts/{user}/deposit", json=deposit, headers={"Idempotency-Key": "k1"})
    again = await gateway.post(f"/api/accounts/{user}/deposit", json=deposit, headers={"Idempotency-Key": "k1"})
    assert first.json()["balance"] == again.json()["balance"] == 100
    assert again.headers["idempotent-replayed"] == "true"
    assert upstreams["payments"].requests[-1].headers["idempotency-key"] == "k1"
    generated = upstreams["payments"].requests[-1].headers["x-request-id"]
    assert generated and again.headers["x-request-id"] == generated  # added where missing, same on both sides

    balance = await gateway.get("/api/accounts/balance", params={"user_id": user})
    assert balance.json() == {"user_id": user, "balance": 100}

    order = await gateway.post("/api/orders", json={"user_id": user, "amount": 10, "description": "tea"})
    assert order.status_code == 202
    order_id = order.json()["id"]
    assert order.headers["location"] == f"/api/orders/{order_id}"
    for path in (f"/api/order/{order_id}", f"/api/orders/{order_id}"):
        assert (await gateway.get(path)).json()["id"] == order_id
    await gateway.post("/api/orders", json={"user_id": user, "amount": 11})
    listed = await gateway.get("/api/orders", params={"user_id": user, "limit": 1})
    assert len(listed.json()) == 1 and listed.headers["link"].startswith("</api/orders?")

    missing = await gateway.get(f"/api/order/{uuid.uuid4()}")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith(PROBLEM)
    climbing = await gateway.post("/api/accounts/../deposit", json=deposit)
    assert climbing.status_code in (400, 404)
    bad = await gateway.post(
        "/api/orders", content=b'{"user_id": "nope", "amount": 1}', headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400 and bad.headers["content-type"].startswith(PROBLEM)


async def test_a_down_upstream_is_503_and_a_slow_one_504(silent_upstream):
    settings = GatewaySettings(payments_url=f"http://127.0.0.1:{free_port()}", orders_url=silent_upstream, timeout=0.3)
    app = create_gateway_app(settings)
    async with AsyncTestClient(app=app) as gateway:
        before = (await gateway.get("/metrics")).text
        down = await gateway.post("/api/accounts", json={"user_id": str(uuid.uuid4())})
        assert down.status_code == 503 and down.headers["content-type"].startswith(PROBLEM)
        assert down.json()["status"] == 503 and "payments" in down.json()["detail"]
        slow = await gateway.get("/api/orders")
        assert slow.status_code == 504 and slow.headers["content-type"].startswith(PROBLEM)
        summary = await gateway.get("/api/summary", params={"user_id": str(uuid.uuid4())})
        assert summary.status_code in (503, 504)
        ready = await gateway.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["upstreams"]["payments"] != "ok"
        after = (await gateway.get("/metrics")).text
        for upstream, reason in (("payments", "unavailable"), ("orders", "timeout")):
            moved = value(after, "hsepay_gateway_upstream_failures_total", upstream=upstream, reason=reason)
            assert moved > value(before, "hsepay_gateway_upstream_failures_total", upstream=upstream, reason=reason)


async def test_the_gateway_has_an_openapi_of_its_own(gateway):
    schema = (await gateway.get("/schema/openapi.json")).json()
    assert schema["info"]["title"] == "hsepay gateway"
    for path in ("/api/summary", "/api/accounts", "/api/accounts/{user_id}/deposit", "/api/order/{order_id}"):
        assert path in schema["paths"], path
    assert "Summary" in str(schema["components"])


# --- a careful reverse proxy (issue 18) -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _running(app):
    """The gateway's lifespan (its upstream clients), for requests sent over httpx's ASGI transport."""
    async with app.lifespan():
        yield app


def _gateway_client(app, peer: str) -> httpx.AsyncClient:
    """A client at address `peer` (the Litestar test client has no address of its own)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 40000)), base_url="http://gw")


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


async def test_the_client_address_goes_upstream_and_each_client_has_its_own_budget(payments_engine, orders_engine):
    # The APIs trust the gateway's address (ASGITransport's peer: 127.0.0.1) and no one else.
    security = SecuritySettings(rate_limit=1, rate_burst=1, trusted_proxies=(ipaddress.ip_network("127.0.0.1"),))
    upstreams = {
        "payments": Recording(create_payments_app(payments_engine, security=security)),
        "orders": Recording(create_orders_app(orders_engine, orders_topic="orders", security=security)),
    }
    app = create_gateway_app(GatewaySettings(), transports=upstreams)
    async with _running(app), _gateway_client(app, "1.1.1.1") as first, _gateway_client(app, "2.2.2.2") as second:
        assert (await first.get("/api/orders", headers={"X-Forwarded-For": "6.6.6.6"})).status_code == 200
        assert upstreams["orders"].requests[-1].headers["x-forwarded-for"] == "6.6.6.6, 1.1.1.1"
        assert (await second.get("/api/orders")).status_code == 200  # another client, another budget
        assert upstreams["orders"].requests[-1].headers["x-forwarded-for"] == "2.2.2.2"
        limited = await first.get("/api/orders", headers={"X-Forwarded-For": "7.7.7.7"})  # spoofing buys nothing
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1 and limited.headers["ratelimit-remaining"] == "0"
        summary = await first.get("/api/summary", params={"user_id": str(uuid.uuid4())})
        assert summary.status_code == 429 and summary.headers["content-type"].startswith(PROBLEM)
        assert int(summary.headers["retry-after"]) >= 1 and summary.headers["ratelimit-limit"] == "1"


class Leaky(httpx.AsyncBaseTransport):
    """An upstream that answers with everything a proxy must not pass on."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            201,
            headers=[
                ("Content-Type", "application/json"),
                ("Location", "/orders/42"),
                ("Retry-After", "3"),
                ("Set-Cookie", "session=upstream-secret"),
                ("Proxy-Authenticate", 'Basic realm="internal"'),
                ("Server", "uvicorn/internal-build-7"),
                ("X-Powered-By", "hsepay-internal"),
                ("Connection", "close, X-Internal-Hop"),
                ("X-Internal-Hop", "10.0.0.7"),
                ("Keep-Alive", "timeout=5"),
                ("Trailer", "X-Checksum"),
                ("Upgrade", "h2c"),
            ],
            content=b"{}",
        )


async def test_hop_by_hop_and_internal_response_headers_stay_at_the_gateway():
    app = create_gateway_app(GatewaySettings(), transports={"payments": Leaky(), "orders": Leaky()})
    async with _running(app), _gateway_client(app, "1.1.1.1") as client:
        response = await client.post("/api/orders", json={})
    assert response.status_code == 201
    assert response.headers["location"] == "/api/orders/42" and response.headers["retry-after"] == "3"
    for name in ("set-cookie", "proxy-authenticate", "x-powered-by", "x-internal-hop", "keep-alive", "trailer"):
        assert name not in response.headers, name
    assert "upgrade" not in response.headers and "internal" not in response.headers.get("server", "")


async def test_two_idempotency_keys_are_refused_as_the_api_refuses_them(upstreams):
    user = str(uuid.uuid4())
    body = {"user_id": user, "amount": 5}
    headers = [("Idempotency-Key", "first"), ("Idempotency-Key", "second"), ("Content-Type", "application/json")]
    app = create_gateway_app(GatewaySettings(), transports=upstreams)
    async with _running(app), _gateway_client(app, "1.1.1.1") as gateway:  # a client that keeps both headers
        through = await gateway.post("/api/orders", content=json.dumps(body), headers=headers)
    direct = await httpx.AsyncClient(transport=upstreams["orders"].inner, base_url="http://api").post(
        "/orders", content=json.dumps(body), headers=headers
    )
    assert assert_problem(through, 400)["detail"] == assert_problem(direct, 400)["detail"]
    assert upstreams["orders"].requests[-1].headers.get_list("idempotency-key") == ["first", "second"]


async def test_a_header_that_is_not_ascii_reaches_the_api_as_sent_and_is_its_400(upstreams):
    """schemathesis found it: an Idempotency-Key of b"\\xd7\\xf8\\x9b" was a 500 from the gateway, whose
    HTTP client refused to encode the header, where the API answers 400."""
    body = json.dumps({"user_id": str(uuid.uuid4())}).encode()
    headers = [(b"Idempotency-Key", b"\xd7\xf8\x9b"), (b"Content-Type", b"application/json")]
    app = create_gateway_app(GatewaySettings(), transports=upstreams)
    async with _running(app), _gateway_client(app, "1.1.1.1") as gateway:
        through = await gateway.post("/api/accounts", content=body, headers=headers)
    direct = await httpx.AsyncClient(transport=upstreams["payments"].inner, base_url="http://api").post(
        "/accounts", content=body, headers=headers
    )
    assert assert_problem(through, 400)["detail"] == assert_problem(direct, 400)["detail"]
    forwarded = upstreams["payments"].requests[-1].headers.raw
    sent = [value for name, value in forwarded if name.lower() == b"idempotency-key"]
    assert sent == [b"\xd7\xf8\x9b"]


async def test_summary_answers_the_callers_own_mistakes_with_4xx_not_502(gateway):
    user = str(uuid.uuid4())
    for params in ({"user_id": user, "cursor": "not-one-the-api-returned!"}, {"user_id": user, "limit": "0"}):
        response = await gateway.get("/api/summary", params=params)
        assert_problem(response, 400)


async def test_summary_passes_a_401_on_with_its_challenge(payments_engine, orders_engine):
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=0)
    upstreams = {
        "payments": Recording(create_payments_app(payments_engine, security=security)),
        "orders": Recording(create_orders_app(orders_engine, orders_topic="orders", security=security)),
    }
    app = create_gateway_app(GatewaySettings(), security=security, transports=upstreams)
    async with _running(app), _gateway_client(app, "1.1.1.1") as client:
        response = await client.get("/api/summary", params={"user_id": str(uuid.uuid4())})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_body_that_trickles_in_is_a_408_at_the_request_timeout(upstreams):
    """1 byte per second would hold a request forever; the deadline covers the body too (the APIs' 408)."""
    app = create_gateway_app(GatewaySettings(), security=SecuritySettings(request_timeout=0.5), transports=upstreams)
    sent: list[dict] = []

    async def trickle() -> dict:
        await asyncio.sleep(1.0)
        return {"type": "http.request", "body": b"{", "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/orders",
        "raw_path": b"/api/orders",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("1.1.1.1", 40000),
        "server": ("gw", 80),
        "state": {},
    }
    async with _running(app):
        await asyncio.wait_for(app(scope, trickle, send), timeout=10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    assert upstreams["orders"].requests == []  # nothing was forwarded


async def test_the_gateway_document_describes_the_forwarded_routes_as_the_apis_do():
    from hsepay.api.app import api_documents

    security = SecuritySettings(auth_secrets=(SECRET,))
    document = create_gateway_app(GatewaySettings(), security=security, documents=api_documents(security))
    schema = document.openapi_schema.to_schema()
    create = schema["paths"]["/api/orders"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateOrder"
    }
    assert {"user_id", "status", "limit", "cursor"} <= {
        p["name"] for p in schema["paths"]["/api/orders"]["get"]["parameters"]
    }
    deposit = schema["paths"]["/api/accounts/{user_id}/deposit"]["post"]
    assert "Deposit" in str(deposit["requestBody"]) and {"503", "504"} <= set(deposit["responses"])
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/api/summary"]["get"]["security"] == [{"bearer": []}]
    operation_ids = [
        op["operationId"] for item in schema["paths"].values() for op in item.values() if "operationId" in op
    ]
    assert len(operation_ids) == len(set(operation_ids))
