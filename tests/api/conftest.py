"""API test clients on the real (truncated) service databases, and helpers that read their tables.

Helpers are fixtures (not imports): conftest modules are not importable by name under pytest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.config import SecuritySettings
from hsepay.orders import tables as orders_tables
from hsepay.payments import tables as payments_tables
from tests.tokens import PREVIOUS_SECRET, SECRET

PROBLEM_JSON = "application/problem+json"

# Auth off, as `hsepay up` without HSEPAY_AUTH_SECRET; no rate limit, so that a test's own pace never
# decides its outcome (the limit has tests of its own).
INSECURE = SecuritySettings(rate_limit=0)
# Auth on, with a current and a previous secret (rotation).
SECURE = SecuritySettings(auth_secrets=(SECRET, PREVIOUS_SECRET), rate_limit=0)


@pytest_asyncio.fixture
async def payments_client(payments_engine):
    async with AsyncTestClient(app=create_payments_app(payments_engine, security=INSECURE)) as client:
        yield client


@pytest_asyncio.fixture
async def orders_client(orders_engine):
    async with AsyncTestClient(
        app=create_orders_app(orders_engine, orders_topic="orders", security=INSECURE)
    ) as client:
        yield client


@pytest_asyncio.fixture
async def secured_payments_client(payments_engine):
    async with AsyncTestClient(app=create_payments_app(payments_engine, security=SECURE)) as client:
        yield client


@pytest_asyncio.fixture
async def secured_orders_client(orders_engine):
    async with AsyncTestClient(app=create_orders_app(orders_engine, orders_topic="orders", security=SECURE)) as client:
        yield client


@pytest_asyncio.fixture
async def concurrent_payments_client(payments_engine):
    """A client whose requests really overlap: the app runs in the test's own event loop.

    Litestar's AsyncTestClient hands each request to a blocking portal in another thread and
    waits for it, so `asyncio.gather` over it runs the requests one after another; the ASGI
    transport of httpx awaits the app directly, so gathered requests interleave on the database.
    No lifespan is run: the app has no startup hooks, and Litestar's lifespan task group cannot be
    entered in a fixture's setup task and left in its teardown task.
    """
    transport = httpx.ASGITransport(app=create_payments_app(payments_engine, security=INSECURE))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def _assert_problem(response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem: the exact status, the problem media type, and a body that says so."""
    assert response.status_code == status, response.text
    content_type = response.headers["content-type"]
    assert content_type.startswith(PROBLEM_JSON), content_type
    body = json.loads(response.content)
    assert body["status"] == status
    assert body.get("title") or body.get("detail")
    assert "Traceback" not in response.text
    return body


@pytest.fixture
def assert_problem() -> Callable[[Any, int], dict[str, Any]]:
    return _assert_problem


@dataclass
class Accounts:
    """Payments API shortcuts for tests that need an account in a given state, and the ledger."""

    client: AsyncTestClient
    engine: AsyncEngine

    async def open(self, user_id: uuid.UUID | None = None, deposit: int = 0) -> uuid.UUID:
        user_id = user_id or uuid.uuid4()
        created = await self.client.post("/accounts", json={"user_id": str(user_id)})
        assert created.status_code == 201, created.text
        if deposit:
            refilled = await self.client.post(f"/accounts/{user_id}/deposit", json={"amount": deposit})
            assert refilled.status_code == 200, refilled.text
        return user_id

    async def balance(self, user_id: uuid.UUID) -> int:
        response = await self.client.get("/accounts/balance", params={"user_id": str(user_id)})
        assert response.status_code == 200, response.text
        return response.json()["balance"]

    async def ledger(self, user_id: uuid.UUID, kind: str = "deposit") -> list[int]:
        entries = payments_tables.ledger_entries
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(entries.c.amount).where(entries.c.user_id == user_id, entries.c.kind == kind)
            )
            return [row.amount for row in rows]


@pytest.fixture
def accounts(payments_client, payments_engine) -> Accounts:
    return Accounts(payments_client, payments_engine)


@dataclass
class OrdersDb:
    """What the orders database holds, read directly (the API is what is under test)."""

    engine: AsyncEngine

    async def orders(self) -> list:
        async with self.engine.connect() as conn:
            return list(await conn.execute(select(orders_tables.orders)))

    async def outbox(self) -> list:
        outbox = orders_tables.outbox
        async with self.engine.connect() as conn:
            return list(await conn.execute(select(outbox).order_by(outbox.c.id)))


@pytest.fixture
def orders_db(orders_engine) -> OrdersDb:
    return OrdersDb(orders_engine)


class PoolPeak:
    """The most connections an engine had checked out at once: proof that requests overlapped."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.pool = engine.sync_engine.pool
        self.current = self.peak = 0

    def _checkout(self, *args) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def _checkin(self, *args) -> None:
        self.current -= 1

    def __enter__(self) -> PoolPeak:
        event.listen(self.pool, "checkout", self._checkout)
        event.listen(self.pool, "checkin", self._checkin)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.pool, "checkout", self._checkout)
        event.remove(self.pool, "checkin", self._checkin)


@pytest.fixture
def payments_pool_peak(payments_engine) -> PoolPeak:
    """Use as `with payments_pool_peak:` around gathered requests, then assert on `.peak`."""
    return PoolPeak(payments_engine)
