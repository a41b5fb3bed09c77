"""A dead or silent database is detected, not waited out (issue 22), tried through Toxiproxy:

- a statement on a connection whose server went silent fails within the client's bound;
- the orders API answers 503 within 2 s while its database is silent, and 202 again within a
  second of the heal (its breaker's probe, every 0.25 s, finds the database answering);
- an order answered 503 is never created later, and its Idempotency-Key then creates exactly one.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from hsepay import migrate
from hsepay.api.app import create_orders_app
from hsepay.config import ApiSettings, normalise_db_url
from hsepay.connection_policy import ConnectionPolicy
from hsepay.db import create_engine
from tests.support import poll_until

SILENT_BOUND = 3.0  # statement_timeout 2 s + the client's 1 s of grace


@pytest.fixture
def urls(netstack):
    """{service: (through the proxy, straight)} of the orders database, migrated."""
    direct = normalise_db_url(netstack.observer_environ["HSEPAY_ORDERS_DB"], "orders")
    migrate.upgrade("orders", direct)
    return normalise_db_url(netstack.roles_environ["HSEPAY_ORDERS_DB"], "orders"), direct


async def test_a_silent_server_fails_a_statement_within_the_bound_and_is_forgotten(netstack, urls):
    proxied, _ = urls
    engine = create_engine(proxied, pool_size=2, policy=ConnectionPolicy(statement_timeout=2.0))
    try:
        async with engine.begin() as conn:  # a pooled connection, alive and idle
            await conn.execute(text("SELECT 1"))
        await netstack.network.break_link("net-silent", "pg-orders")
        started = time.monotonic()
        with pytest.raises(DBAPIError) as failed:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT 1"))
        took = time.monotonic() - started
        assert failed.value.connection_invalidated, failed.value
        assert took < SILENT_BOUND + 1.5, f"a silent server took {took:.1f}s to be found out"
        await netstack.network.heal("net-silent", "pg-orders")
        async with engine.begin() as conn:  # the pool kept nothing of the dead connection
            assert (await conn.execute(text("SELECT 2"))).scalar() == 2
        print(f"silent server detected in {took:.2f}s (bound {SILENT_BOUND:g}s)")
    finally:
        await engine.dispose()


def _order(user: uuid.UUID) -> dict:
    return {"user_id": str(user), "amount": 5, "description": "netfault"}


async def test_the_api_answers_503_fast_while_its_database_is_silent_and_202_right_after(netstack, urls):
    proxied, _ = urls
    engine = create_engine(proxied, pool_size=4)
    app = create_orders_app(engine)  # the default bounds: 1 s of silence, 5 s in all
    user = uuid.uuid4()
    try:
        async with AsyncTestClient(app) as client:
            placed = await client.post("/orders", json=_order(user))
            assert placed.status_code == 202
            await netstack.network.break_link("net-silent", "pg-orders")
            timings = {}
            for name, call in {
                "POST /orders": lambda: client.post("/orders", json=_order(user)),
                "GET /orders/{id}": lambda: client.get(f"/orders/{placed.json()['id']}"),
                "GET /health/ready": lambda: client.get("/health/ready"),
            }.items():
                started = time.monotonic()
                answer = await call()
                timings[name] = time.monotonic() - started
                assert answer.status_code == 503, (name, answer.text)
            assert max(timings.values()) < 2.0, timings
            await netstack.network.heal("net-silent", "pg-orders")
            healed = time.monotonic()
            while (again := await client.post("/orders", json=_order(user))).status_code != 202:
                assert again.status_code == 503 and time.monotonic() - healed < 5, again.text
                await asyncio.sleep(0.05)
            back = time.monotonic() - healed
            assert back < 1.0, f"202 again {back:.2f}s after the heal"
            print({**{k: round(v, 2) for k, v in timings.items()}, "first 202 after the heal": round(back, 2)})
    finally:
        await engine.dispose()


async def _count_orders(direct: str, user: uuid.UUID) -> int:
    async with await psycopg.AsyncConnection.connect(direct.replace("+psycopg", "")) as conn:
        cur = await conn.execute("SELECT count(*) FROM orders WHERE user_id = %s", (user,))
        return (await cur.fetchone())[0]


async def _backends(direct: str, name: str) -> int:
    async with await psycopg.AsyncConnection.connect(direct.replace("+psycopg", "")) as conn:
        cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,))
        return (await cur.fetchone())[0]


async def test_an_order_answered_503_is_never_created_later(netstack, urls):
    """Its statements reach the server late (3 s upstream latency, deadline 1 s): before issue 22 the
    batch went on after the 503 and committed; now its connection is cut before any COMMIT."""
    proxied, direct = urls
    name = f"hsepay-late-{uuid.uuid4().hex[:6]}"
    engine = create_engine(proxied, pool_size=2, application_name=name)
    app = create_orders_app(engine, api=ApiSettings(db_timeout=1.0))
    user, key = uuid.uuid4(), f"late-{uuid.uuid4()}"
    toxiproxy = netstack.network.toxiproxy
    try:
        async with AsyncTestClient(app) as client:
            await poll_until(lambda: _ready(client), timeout=30, what="readiness")  # a pooled connection exists
            await toxiproxy.add_toxic(
                "pg-orders", "late", {"type": "latency", "stream": "upstream", "attributes": {"latency": 3000}}
            )
            answer = await client.post("/orders", json=_order(user), headers={"Idempotency-Key": key})
            assert answer.status_code == 503, answer.text
            await toxiproxy.remove_toxic("pg-orders", "late")
            await engine.dispose()
            # Everything the cut connection sent has reached the server once its backend is gone.
            await poll_until(lambda: _none(_backends(direct, name)), timeout=30, what="the late session's end")
            assert await _count_orders(direct, user) == 0, "an order answered 503 was created later"
            retried = await client.post("/orders", json=_order(user), headers={"Idempotency-Key": key})
            assert retried.status_code == 202, retried.text
            replay = await client.post("/orders", json=_order(user), headers={"Idempotency-Key": key})
            assert replay.json()["id"] == retried.json()["id"]
            assert await _count_orders(direct, user) == 1
    finally:
        await engine.dispose()


async def _none(count) -> bool:
    return await count == 0


async def _ready(client) -> bool:
    return (await client.get("/health/ready")).status_code == 200
