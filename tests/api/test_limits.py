"""Resource limits: a rate limit per caller, a deadline per request, a bounded wait for a pooled
connection, and logs that carry neither SQL, tracebacks nor credentials."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.api.guard import RateLimiter, client_ip
from hsepay.api.problems import database_error_handler
from hsepay.config import SecuritySettings
from hsepay.db import create_engine
from hsepay.payments.tables import accounts as accounts_table
from tests.support import open_account
from tests.tokens import SECRET, issue

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


# --- the rate limiter and the client address, alone ---------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_the_rate():
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=3, clock=clock)
    assert [limiter.hit("a")[0] for _ in range(4)] == [True, True, True, False]
    assert limiter.hit("b")[0]  # another caller has its own bucket
    clock.now += 0.1  # one token back at 10/s
    assert [limiter.hit("a")[0] for _ in range(2)] == [True, False]
    clock.now += 60
    assert limiter.hit("a") == (True, 2)  # full again, never above the burst


def test_token_buckets_are_bounded_forgetting_the_longest_idle():
    limiter = RateLimiter(rate=1, burst=1, max_keys=3, clock=Clock())
    for key in "abcd":
        limiter.hit(key)
    assert list(limiter._buckets) == ["b", "c", "d"]


@pytest.mark.parametrize(
    "peer, forwarded, expected",
    [
        ("1.2.3.4", "9.9.9.9", "1.2.3.4"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "9.9.9.9", "9.9.9.9"),  # a trusted proxy names the client
        ("10.0.0.2", "6.6.6.6, 9.9.9.9", "9.9.9.9"),  # the right-most untrusted hop, not the client-written left
        ("10.0.0.2", "9.9.9.9, 10.0.0.7", "9.9.9.9"),  # two trusted proxies in a row
        ("10.0.0.2", "not-an-ip", "10.0.0.2"),
        ("10.0.0.2", None, "10.0.0.2"),
        (None, "9.9.9.9", "unknown"),
    ],
)
def test_client_ip_trusts_x_forwarded_for_only_from_trusted_proxies(peer, forwarded, expected):
    assert client_ip(peer, forwarded, TRUSTED) == expected


def test_client_ip_without_trusted_proxies_is_the_peer():
    assert client_ip("10.0.0.2", "9.9.9.9", ()) == "10.0.0.2"


# --- the rate limit through the API --------------------------------------------------------------------


def _client(app, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 40000)), base_url="http://test")


async def test_over_the_limit_is_429_with_ratelimit_headers(orders_engine, assert_problem):
    app = create_orders_app(orders_engine, security=SecuritySettings(rate_limit=1, rate_burst=3))
    async with _client(app) as client:
        responses = [await client.get("/orders") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["ratelimit-remaining"] for r in responses[:3]] == ["2", "1", "0"]
    refused = responses[-1]
    assert_problem(refused, 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-limit"] == "3" and refused.headers["ratelimit-remaining"] == "0"


async def test_the_limit_is_per_token_subject_when_authenticated(orders_engine):
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=1, rate_burst=2)
    app = create_orders_app(orders_engine, security=security)
    alice, bob = (f"Bearer {issue(uuid.uuid4())}" for _ in range(2))
    async with _client(app) as client:  # one address for both: the subject decides
        statuses = [(await client.get("/orders", headers={"Authorization": who})).status_code for who in [alice] * 3]
        assert statuses == [200, 200, 429]
        assert (await client.get("/orders", headers={"Authorization": bob})).status_code == 200


async def test_failed_authentications_count_against_the_address(orders_engine):
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=1, rate_burst=2)
    app = create_orders_app(orders_engine, security=security)
    async with _client(app, "9.9.9.9") as guesser, _client(app, "8.8.8.8") as other:
        statuses = [
            (await guesser.get("/orders", headers={"Authorization": "Bearer guess"})).status_code for _ in range(3)
        ]
        assert statuses == [401, 401, 429]
        assert (await other.get("/orders")).status_code == 401  # another address is not throttled


async def test_x_forwarded_for_is_honoured_only_behind_a_trusted_proxy(orders_engine):
    limited = {"rate_limit": 1, "rate_burst": 1}
    trusting = create_orders_app(orders_engine, security=SecuritySettings(trusted_proxies=TRUSTED, **limited))
    async with _client(trusting, "10.0.0.2") as proxy:
        for client_address in ("1.1.1.1", "2.2.2.2"):  # two clients behind one proxy: a budget each
            assert (await proxy.get("/orders", headers={"X-Forwarded-For": client_address})).status_code == 200
    distrusting = create_orders_app(orders_engine, security=SecuritySettings(**limited))
    async with _client(distrusting, "10.0.0.2") as proxy:
        statuses = [
            (await proxy.get("/orders", headers={"X-Forwarded-For": a})).status_code for a in ("1.1.1.1", "2.2.2.2")
        ]
        assert statuses == [200, 429]  # the header is not believed: one peer, one budget


async def test_health_and_schema_are_not_rate_limited(orders_engine):
    app = create_orders_app(orders_engine, security=SecuritySettings(rate_limit=1, rate_burst=1))
    async with _client(app) as client:
        for _ in range(3):
            assert (await client.get("/health/live")).status_code == 200
            assert (await client.get("/schema/openapi.json")).status_code == 200


# --- deadlines ---------------------------------------------------------------------------------------------


async def test_a_request_past_the_timeout_is_503_and_has_no_effect(payments_engine, assert_problem):
    """A deposit that waits on a locked account row is cancelled at the deadline, not left hanging."""
    user = await open_account(payments_engine, balance=10)
    app = create_payments_app(payments_engine, security=SecuritySettings(rate_limit=0, request_timeout=0.5))
    async with payments_engine.connect() as locker:
        transaction = await locker.begin()
        await locker.execute(select(accounts_table).where(accounts_table.c.user_id == user).with_for_update())
        async with AsyncTestClient(app=app) as client:
            response = await client.post(f"/accounts/{user}/deposit", json={"amount": 5})
        await transaction.rollback()
    body = assert_problem(response, 503)
    assert "too long" in body["detail"]

    async def balance() -> int:
        async with payments_engine.connect() as conn:
            return (
                await conn.execute(select(accounts_table.c.balance).where(accounts_table.c.user_id == user))
            ).scalar()

    assert await balance() == 10


@pytest.mark.parametrize(
    "length",
    [[], [(b"content-length", b"40")]],
    ids=["unmeasured", "measured: read by the fast lane"],
)
async def test_a_body_that_does_not_arrive_in_time_is_408(orders_engine, length):
    app = create_orders_app(orders_engine, security=SecuritySettings(rate_limit=0, request_timeout=0.3))
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b'{"user_id": ', "more_body": True}]

    async def receive():
        if chunks:
            return chunks.pop()
        await asyncio.Event().wait()  # a client that stops sending mid-body

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/orders",
        "raw_path": b"/orders",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test"), *length],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    assert sent[0]["status"] == 408
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/problem+json"


async def test_an_exhausted_pool_is_503_after_the_pool_timeout(db_urls, assert_problem):
    engine = create_engine(db_urls["payments"], pool_size=1, pool_timeout=0.2)  # 2 connections at most
    try:
        app = create_payments_app(engine, security=SecuritySettings(rate_limit=0))
        async with engine.connect() as first, engine.connect() as second:
            await first.exec_driver_sql("SELECT 1")
            await second.exec_driver_sql("SELECT 1")
            async with AsyncTestClient(app=app) as client:
                response = await client.get("/accounts/balance", params={"user_id": str(uuid.uuid4())})
        assert_problem(response, 503)
    finally:
        await engine.dispose()


# --- what the logs never carry ---------------------------------------------------------------------------


async def test_logs_carry_no_token_secret_sql_or_traceback(orders_engine, caplog, monkeypatch):
    from hsepay.orders import operations

    token = issue(uuid.uuid4())
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=1, rate_burst=1)

    async def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(operations, "list_orders", broken)
    caplog.set_level(logging.DEBUG)
    async with AsyncTestClient(app=create_orders_app(orders_engine, security=security)) as client:
        for authorization in (f"Bearer {token}", f"Bearer {token}x", "Bearer " + SECRET, f"Bearer {token}"):
            await client.get("/orders", headers={"Authorization": authorization})
    text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert "unhandled error on GET /orders: RuntimeError: boom" in text
    assert token[:40] not in text and SECRET not in text
    assert "Traceback" not in text and not any(record.exc_info for record in caplog.records)


def test_a_database_error_is_logged_and_answered_without_its_sql(caplog):
    class Orig(Exception):
        pass

    error = DBAPIError(
        "SELECT balance FROM accounts WHERE user_id = %(u)s", {"u": "secret-user"}, Orig("boom\nDETAIL: x")
    )

    class FakeRequest:  # the handler reads the method and path only
        method = "GET"

        class url:
            path = "/accounts/balance"

    caplog.set_level(logging.DEBUG)
    response = database_error_handler(FakeRequest(), error)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert response.status_code == 500
    for leaked in ("SELECT", "secret-user", "DETAIL"):
        assert leaked not in text and leaked not in str(response.content)
