"""A session left idle inside a transaction — its client frozen or cut off, its locks held — is ended
by the server, and a consumer waiting on its locks goes on by itself (issue 22: such a zombie
wedged the payments consumer for 292 s, with readiness green)."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from hsepay.connection_policy import ConnectionPolicy
from hsepay.db import create_engine
from hsepay.payments.tables import accounts
from tests.support import as_message, open_account, order_created_row, place_order, relay_signer

IDLE_LIMIT = 2.0


async def test_a_zombie_transaction_is_ended_and_the_consumer_goes_on(saga, payments_engine, orders_engine):
    user = await open_account(payments_engine, 100)
    order = await place_order(orders_engine, user, 30, saga.settings.kafka.orders_topic)
    message = await order_created_row(orders_engine, order)
    zombie_engine = create_engine(
        saga.db_urls["payments"],
        pool_size=1,
        application_name="hsepay-zombie",
        policy=ConnectionPolicy(idle_in_transaction_timeout=IDLE_LIMIT),
    )
    zombie = await zombie_engine.connect()
    try:
        await zombie.begin()
        await zombie.execute(accounts.update().where(accounts.c.user_id == user).values(balance=accounts.c.balance))
        # ... and nothing more: the account's row stays locked by a session that says nothing.
        consumer = saga.system("payments", relays=False)["payments"].consumer
        started = time.monotonic()
        async with asyncio.timeout(60):  # before the fix: waits as long as the zombie lives
            assert await consumer.apply([as_message(message, signer=relay_signer(saga, "orders"))])
        took = time.monotonic() - started
        assert consumer.stats.processed == 1
        with pytest.raises(DBAPIError):  # the server ended the zombie's session
            await zombie.execute(text("SELECT 1"))
        print(f"consumer went on {took:.1f}s after the zombie took its lock (idle limit {IDLE_LIMIT:g}s)")
    finally:
        await zombie.invalidate()
        await zombie_engine.dispose()
    async with payments_engine.connect() as conn:
        balance = (await conn.execute(text("SELECT balance FROM accounts WHERE user_id = :u"), {"u": user})).scalar()
    assert balance == 70
