"""The gateway: the seed's /api paths forwarded to the real APIs, /api/summary as JSON, bounded failures."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest_asyncio
from litestar.testing import AsyncTestClient

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.config import GatewaySettings
from hsepay.gateway import create_gateway_app
from tests.e2e.conftest import free_port
from tests.ops.helpers import value

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
