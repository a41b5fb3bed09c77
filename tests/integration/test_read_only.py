"""A server that answers but cannot write (a standby behind HAProxy, a demoted primary, a database
set read-only) is "database unavailable" everywhere (issue 22): the APIs answer 503, never 500; a
consumer waits it out without counting attempts against a healthy message; the relay's lock
session fails as an outage; and a multi-host URL reaches the same server from every role.

The read-only server is a real one: `default_transaction_read_only` set on the database, which
PostgreSQL enforces with the same SQLSTATE (25006) a hot standby gives."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.engine import make_url

from hsepay import migrate
from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.bounded_db import BoundedDatabase
from hsepay.config import ConsumerSettings, SecuritySettings, normalise_db_url
from hsepay.config.dburl import libpq_params
from hsepay.db import create_engine
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments.reactions import make_handlers as payments_handlers
from hsepay.payments.tables import inbox as payments_inbox
from hsepay.payments.tables import payment_decisions
from hsepay.primary import watch_of
from hsepay.relay.broker import BrokerConfig
from hsepay.relay.consumer import InboxConsumer
from hsepay.relay.leadership import Leadership
from hsepay.relay.store import INBOX_PROCESSED
from hsepay.resilience import Unavailable, is_unavailable
from tests.support import as_message, open_account, order_created_row, place_order, poll_until

NO_AUTH = SecuritySettings(rate_limit=0)


def assert_problem(response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.fixture
def databases(pg_server):
    """(server URI, {service: (name, url)}): a fresh migrated database per service for this test."""
    suffix = uuid.uuid4().hex[:8]
    names = {service: f"hsepay_ro_{service}_{suffix}" for service in ("payments", "orders")}
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = make_url(pg_server)
    urls = {}
    for service, name in names.items():
        urls[service] = normalise_db_url(base.set(database=name).render_as_string(hide_password=False), "test")
        migrate.upgrade(service, urls[service])
    yield pg_server, {service: (names[service], urls[service]) for service in names}
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def read_only(pg_server: str, name: str, on: bool) -> None:
    """Make every new session of database `name` read-only (or writable again), and end the current ones."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        if on:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(name))
            )
        else:
            conn.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(sql.Identifier(name)))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def any_session(url: str) -> str:
    """The URL asking libpq for any session, as a connection through HAProxy gets: libpq cannot
    tell that the server behind the proxy turned read-only, the statement finds out."""
    return normalise_db_url(
        make_url(url).update_query_dict({"target_session_attrs": "any"}).render_as_string(False), "t"
    )


@pytest.mark.parametrize("through_proxy", [True, False], ids=["read-only-session", "refused-by-libpq"])
async def test_the_apis_answer_503_not_500_while_the_server_is_read_only(databases, through_proxy):
    pg_server, dbs = databases
    payments_url, orders_url = dbs["payments"][1], dbs["orders"][1]
    if through_proxy:
        payments_url, orders_url = any_session(payments_url), any_session(orders_url)
    payments, orders = create_engine(payments_url, pool_size=2), create_engine(orders_url, pool_size=2)
    try:
        user = await open_account(payments, 100)
        read_only(pg_server, dbs["payments"][0], True)
        read_only(pg_server, dbs["orders"][0], True)
        async with (
            AsyncTestClient(app=create_payments_app(payments, security=NO_AUTH)) as pay,
            AsyncTestClient(app=create_orders_app(orders, security=NO_AUTH)) as order,
        ):
            for _ in range(3):  # and again on the pool's next connection
                assert_problem(await pay.post(f"/accounts/{user}/deposit", json={"amount": 5}), 503)
                assert_problem(
                    await order.post("/orders", json={"user_id": str(user), "amount": 5, "description": "x"}), 503
                )
            read_only(pg_server, dbs["payments"][0], False)
            read_only(pg_server, dbs["orders"][0], False)
            deposit = await poll_until(
                lambda: _status_of(pay.post(f"/accounts/{user}/deposit", json={"amount": 5}), 200),
                timeout=10,
                what="deposits accepted again",
            )
            assert deposit.json()["balance"] == 105
    finally:
        await payments.dispose()
        await orders.dispose()


async def _status_of(request, wanted: int):
    response = await request
    return response if response.status_code == wanted else None


async def test_the_breaker_opens_on_a_read_only_answer_and_closes_when_the_server_takes_writes(databases):
    """Issue 22: behind HAProxy a demoted primary's read-only answer tripped nothing, so during a
    failover every request went on to try a connection of its own (the slowest 503 took 1.8 s).
    Now the first such answer opens the breaker (503 at once), and it closes on the first probe
    that finds the server writable, not merely answering."""
    pg_server, dbs = databases
    name, url = dbs["payments"]
    read_only(pg_server, name, True)
    db = BoundedDatabase(create_engine(any_session(url), pool_size=2), timeout=5.0, silence=0.6, probe_every=0.05)
    try:
        with pytest.raises(Exception) as caught:
            async with db.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE breaker_test (x int)")
        assert "read-only" in str(caught.value)
        assert db.silent_since is not None and db.no_primary
        with pytest.raises(Unavailable, match="no writable database primary"):
            async with db.unit():
                pass
        probes = db.probes
        await poll_until(lambda: _probed(db, probes + 3), timeout=10, what="3 more probes")
        assert db.silent_since is not None and db.writable is False  # it answers, but cannot write
        read_only(pg_server, name, False)
        await poll_until(lambda: _closed(db), timeout=10, what="the breaker to close")
        assert db.writable is True and db.trips == 1
        async with db.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE breaker_test (x int)")
    finally:
        await db.close()
        await db.engine.dispose()


async def _probed(db: BoundedDatabase, probes: int) -> bool:
    return db.probes >= probes


async def _closed(db: BoundedDatabase) -> bool:
    return db.silent_since is None


async def test_a_healthy_message_gains_no_attempts_while_the_server_is_read_only(databases):
    """Issue 22: behind HAProxy a switchover made a healthy payment message fail 5 times, one short
    of quarantine. Now the consumer waits the outage out and the message is applied once, attempt 1."""
    pg_server, dbs = databases
    payments = create_engine(any_session(dbs["payments"][1]), pool_size=2)
    orders = create_engine(dbs["orders"][1], pool_size=2)
    try:
        user = await open_account(payments, 100)
        order_id = await place_order(orders, user, 30, "orders")
        message = as_message(await order_created_row(orders, order_id), signer=None)  # the consumer has no verifier
        consumer = InboxConsumer(
            name="payments",
            engine=payments,
            inbox_table=payments_inbox,
            handlers=payments_handlers(payment_status_topic="payment-status"),
            broker=BrokerConfig("127.0.0.1:1", False),  # never used: apply() only touches the database
            topics=("orders",),
            group_id="unused",
            settings=ConsumerSettings(max_attempts=2),
            max_backoff=0.2,
        )
        read_only(pg_server, dbs["payments"][0], True)
        stop = asyncio.Event()
        applying = asyncio.create_task(consumer.apply([message], stop))
        await poll_until(
            lambda: _at_least(consumer.stats, 4), timeout=30, what="4 failed attempts on the read-only server"
        )
        assert not applying.done()
        read_only(pg_server, dbs["payments"][0], False)
        assert await asyncio.wait_for(applying, timeout=30)
        assert consumer.stats.quarantined == 0 and consumer.stats.processed == 1
        # The pipelined inbox (main's perf work) meets the read-only error on a driver connection that
        # the pool then drops: the retry after it may fail "the connection is lost". Both are outages.
        assert any(words in (consumer.stats.last_error or "") for words in ("read-only", "connection is lost"))
        async with payments.connect() as conn:
            row = (await conn.execute(select(payments_inbox.c.status, payments_inbox.c.attempts))).one()
            decision = (await conn.execute(select(payment_decisions.c.status))).scalar_one()
        assert (row.status, row.attempts) == (INBOX_PROCESSED, 1)
        assert decision == "succeeded"
    finally:
        await payments.dispose()
        await orders.dispose()


async def _at_least(stats, errors: int) -> bool:
    return stats.errors >= errors


async def test_the_relay_lock_session_on_a_read_only_server_is_an_outage(databases):
    pg_server, dbs = databases
    read_only(pg_server, dbs["orders"][0], True)
    lead = Leadership(
        db_url=any_session(dbs["orders"][1]), outbox=orders_outbox, name="orders", lease=10, standby_interval=0.1
    )
    with pytest.raises(psycopg.Error) as caught:
        async with lead:
            await lead.acquire(asyncio.Event())
    assert "read-only" in str(caught.value) and is_unavailable(caught.value)
    # With hsepay's default session (read-write), libpq itself refuses the read-only server.
    with pytest.raises(psycopg.OperationalError) as refused:
        async with Leadership(
            db_url=dbs["orders"][1], outbox=orders_outbox, name="orders", lease=10, standby_interval=0.1
        ):
            pass
    assert "read-only" in str(refused.value) and is_unavailable(refused.value)


async def test_a_multi_host_url_reaches_the_same_server_from_the_engine_and_the_relay(databases):
    """Before issue 22 the relay turned SQLAlchemy's multi-host form into a libpq URI that named one
    host '127.0.0.1:5443' and retried forever. Here the first host is a socket directory where no
    server listens, the second the real one: both kinds of connection skip the first."""
    _, dbs = databases
    url = dbs["orders"][1]
    real = str(libpq_params(url)["host"])
    dead = f"/tmp/hsepay-no-server-{uuid.uuid4().hex[:8]}"
    multi = normalise_db_url(
        make_url(url).set(host=None, port=None).update_query_dict({"host": f"{dead},{real}"}).render_as_string(False),
        "HSEPAY_ORDERS_DB",
    )
    engine = create_engine(multi, pool_size=1, application_name="hsepay-multi-host-test")
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT current_database()")).scalar_one() == dbs["orders"][0]
        async with Leadership(
            db_url=multi, outbox=orders_outbox, name="multi-host-test", lease=10, standby_interval=0.1
        ) as lead:
            assert await lead.acquire(asyncio.Event())
        assert watch_of("multi-host-test").server is not None
        assert watch_of("multi-host-test").server.startswith(real)
    finally:
        await engine.dispose()
