"""The audit's snapshots outlive the sessions' idle-in-transaction limit while the topics are read.

Every hsepay session is ended by the server after HSEPAY_DB_IDLE_IN_TRANSACTION_TIMEOUT (5 s) idle
inside a transaction; the audit reads the topics inside its two snapshots, and at the end of a one-hour
soak that read took longer: the verdict was lost to IdleInTransactionSessionTimeout."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from hsepay.audit import snapshots
from hsepay.connection_policy import ConnectionPolicy
from hsepay.db import create_engine
from hsepay.orders.tables import orders
from hsepay.payments.tables import accounts

IDLE_LIMIT = 0.5
READING_THE_TOPICS = 3 * IDLE_LIMIT  # stands for a slow read of the topics between two statements


@pytest.fixture
async def short_idle_engines(db_urls):
    policy = ConnectionPolicy(idle_in_transaction_timeout=IDLE_LIMIT)
    made = [create_engine(db_urls[name], pool_size=1, policy=policy) for name in ("payments", "orders")]
    yield made
    for engine in made:
        await engine.dispose()


async def test_a_snapshot_allowed_to_wait_is_still_open_after_a_long_pause(short_idle_engines):
    payments, orders_engine = short_idle_engines
    async with snapshots(payments, orders_engine, idle_allowed=READING_THE_TOPICS + 30) as (p, o):
        await p.execute(select(func.count()).select_from(accounts))
        await o.execute(select(func.count()).select_from(orders))
        await asyncio.sleep(READING_THE_TOPICS)
        assert (await p.execute(select(func.count()).select_from(accounts))).scalar_one() >= 0
        assert (await o.execute(select(func.count()).select_from(orders))).scalar_one() >= 0
        assert (await p.exec_driver_sql("SHOW transaction_read_only")).scalar_one() == "on"


async def test_without_the_allowance_the_server_ends_the_snapshot(short_idle_engines):
    """The limit the allowance lifts is real: the same pause without it loses the session."""
    payments, orders_engine = short_idle_engines
    with pytest.raises(DBAPIError, match="idle-in-transaction"):
        async with snapshots(payments, orders_engine) as (p, _):
            await p.execute(select(func.count()).select_from(accounts))
            await asyncio.sleep(READING_THE_TOPICS)
            await p.execute(select(func.count()).select_from(accounts))
