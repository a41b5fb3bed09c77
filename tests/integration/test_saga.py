"""The payment saga end to end: API → orders outbox → Kafka → payments inbox → Kafka → orders."""

from __future__ import annotations

import asyncio
import uuid

from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.payments.tables import accounts, ledger_entries, payment_decisions
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final


async def _account(client, balance: int) -> str:
    user = str(uuid.uuid4())
    assert (await client.post("/accounts", json={"user_id": user})).status_code == 201
    if balance:
        assert (await client.post(f"/accounts/{user}/deposit", json={"amount": balance})).status_code == 200
    return user


async def _order(client, user: str, amount: int) -> uuid.UUID:
    response = await client.post("/orders", json={"user_id": user, "amount": amount, "description": "test"})
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


async def test_funded_unfunded_and_unknown_account(saga, payments_engine, orders_engine):
    async with (
        AsyncTestClient(create_payments_app(payments_engine)) as payments,
        AsyncTestClient(create_orders_app(orders_engine, orders_topic=saga.settings.kafka.orders_topic)) as orders,
        start_workers(saga.system("payments", "orders")),
    ):
        rich = await _account(payments, 1000)
        poor = await _account(payments, 10)
        paid = await _order(orders, rich, 300)
        refused = await _order(orders, poor, 300)
        stranger = await _order(orders, str(uuid.uuid4()), 5)

        final = await wait_final(orders_engine, [paid, refused, stranger])

        assert final[paid] == ("success", None)
        assert final[refused] == ("failed", "insufficient_funds")
        assert final[stranger] == ("failed", "account_not_found")
        assert (await payments.get("/accounts/balance", params={"user_id": rich})).json()["balance"] == 700
        assert (await payments.get("/accounts/balance", params={"user_id": poor})).json()["balance"] == 10
        shown = (await orders.get(f"/order/{refused}")).json()
        assert shown["status"] == "failed" and shown["reason"] == "insufficient_funds"


async def test_concurrent_orders_never_overdraw(saga, payments_engine, orders_engine):
    """200 orders of 10 against a balance of 500: exactly 50 succeed, the balance ends at 0."""
    async with (
        AsyncTestClient(create_payments_app(payments_engine)) as payments,
        AsyncTestClient(create_orders_app(orders_engine, orders_topic=saga.settings.kafka.orders_topic)) as orders,
    ):
        user = await _account(payments, 500)
        async with start_workers(saga.system("payments", "orders")):
            ids = await asyncio.gather(*(_order(orders, user, 10) for _ in range(200)))
            final = await wait_final(orders_engine, ids)

    statuses = [status for status, _ in final.values()]
    assert statuses.count("success") == 50
    assert statuses.count("failed") == 150
    assert {reason for status, reason in final.values() if status == "failed"} == {"insufficient_funds"}
    async with payments_engine.connect() as conn:
        balance = (await conn.execute(select(accounts.c.balance).where(accounts.c.user_id == uuid.UUID(user)))).scalar()
        debits = (
            await conn.execute(select(func.count()).select_from(ledger_entries).where(ledger_entries.c.kind == "debit"))
        ).scalar()
        decisions = (await conn.execute(select(func.count()).select_from(payment_decisions))).scalar()
    assert balance == 0
    assert debits == 50
    assert decisions == 200
