"""The debit is race-free at the database level: concurrent transactions, one account, one order."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from hsepay.payments import operations
from hsepay.payments.model import PaymentRequest
from hsepay.payments.tables import ledger_entries, payment_decisions
from tests.support import open_account


async def _decide(engine, requests):
    async with engine.begin() as conn:
        return await operations.process_payments(conn, requests)


async def _retrying(engine, requests):
    """What the inbox consumer does when a batch hits a constraint: try again in a new transaction."""
    for _ in range(5):
        try:
            return await _decide(engine, requests)
        except IntegrityError:
            continue
    raise AssertionError("still conflicting after 5 attempts")


async def test_concurrent_transactions_never_overdraw(payments_engine):
    user = await open_account(payments_engine, 100)
    requests = [PaymentRequest(order_id=uuid.uuid4(), user_id=user, amount=10) for _ in range(30)]
    answers = await asyncio.gather(*(_decide(payments_engine, [r]) for r in requests))
    statuses = [batch[0].status for batch in answers]
    assert statuses.count("succeeded") == 10
    assert statuses.count("failed") == 20
    async with payments_engine.connect() as conn:
        assert (await operations.get_account(conn, user)).balance == 0


async def test_one_order_requested_concurrently_is_debited_once(payments_engine):
    user = await open_account(payments_engine, 100)
    request = PaymentRequest(order_id=uuid.uuid4(), user_id=user, amount=30)
    answers = await asyncio.gather(*(_retrying(payments_engine, [request]) for _ in range(10)))
    assert {batch[0].status for batch in answers} == {"succeeded"}
    async with payments_engine.connect() as conn:
        assert (await operations.get_account(conn, user)).balance == 70
        debits = await conn.execute(
            select(func.count()).select_from(ledger_entries).where(ledger_entries.c.reference == str(request.order_id))
        )
        assert debits.scalar() == 1


async def test_a_refused_order_stays_refused_after_the_account_is_funded(payments_engine):
    user = await open_account(payments_engine, 5)
    request = PaymentRequest(order_id=uuid.uuid4(), user_id=user, amount=50)
    assert (await _decide(payments_engine, [request]))[0].reason == "insufficient_funds"
    async with payments_engine.begin() as conn:
        await operations.deposit(conn, user, 100)
    again = (await _decide(payments_engine, [request]))[0]
    assert (again.status, again.reason) == ("failed", "insufficient_funds")
    async with payments_engine.connect() as conn:
        assert (await operations.get_account(conn, user)).balance == 105


async def test_database_refuses_a_second_debit_or_decision_for_one_order(payments_engine):
    user = await open_account(payments_engine, 100)
    order_id = uuid.uuid4()
    await _decide(payments_engine, [PaymentRequest(order_id=order_id, user_id=user, amount=10)])
    with pytest.raises(IntegrityError):
        async with payments_engine.begin() as conn:
            await conn.execute(
                insert(ledger_entries).values(user_id=user, kind="debit", amount=10, reference=str(order_id))
            )
    with pytest.raises(IntegrityError):
        async with payments_engine.begin() as conn:
            await conn.execute(
                insert(payment_decisions).values(order_id=order_id, user_id=user, amount=10, status="succeeded")
            )
