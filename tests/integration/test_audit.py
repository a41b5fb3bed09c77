"""`run_audit` on a real saga run, and each of its checks catching a violation injected with SQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from hsepay.events import PaymentFailed, PaymentSucceeded
from hsepay.orders import operations as orders_ops
from hsepay.orders.tables import orders
from hsepay.payments import operations as payments_ops
from hsepay.payments.model import PaymentRequest
from hsepay.payments.tables import accounts, ledger_entries, payment_decisions
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final
from tests.support import assert_audit_ok, audit, open_account, place_order

TOPIC = "orders-audit-unused"  # these tests settle orders by hand; nothing is relayed


def failing(report) -> set[str]:
    return {check.name for check in report.checks if not check.ok}


def examples(report, name: str) -> list[str]:
    return next(check.violations for check in report.checks if check.name == name)


async def settle(payments_engine, orders_engine, order_ids) -> None:
    """What the saga does, without Kafka: decide the payments, then settle the orders."""
    async with orders_engine.connect() as conn:
        placed = [await orders_ops.get_order(conn, order_id) for order_id in order_ids]
    async with payments_engine.begin() as conn:
        decisions = await payments_ops.process_payments(
            conn, [PaymentRequest(order_id=o.id, user_id=o.user_id, amount=o.amount) for o in placed]
        )
    answers = [
        PaymentSucceeded(order_id=d.order_id, user_id=d.user_id, amount=d.amount)
        if d.succeeded
        else PaymentFailed(order_id=d.order_id, user_id=d.user_id, amount=d.amount, reason=d.reason)
        for d in decisions
    ]
    async with orders_engine.begin() as conn:
        await orders_ops.apply_payment_results(conn, answers)


@pytest.fixture
async def settled(payments_engine, orders_engine):
    """A consistent world: a paid order, a refused one, one without an account, and one still created."""
    rich = await open_account(payments_engine, 1000)
    poor = await open_account(payments_engine, 10)
    ids = {
        "paid": await place_order(orders_engine, rich, 300, TOPIC),
        "refused": await place_order(orders_engine, poor, 50, TOPIC),
        "stranger": await place_order(orders_engine, uuid.uuid4(), 5, TOPIC),
    }
    await settle(payments_engine, orders_engine, ids.values())
    ids["waiting"] = await place_order(orders_engine, rich, 1, TOPIC)
    report = await assert_audit_ok(payments_engine, orders_engine)
    assert report.facts["orders_awaiting_decision"] == 1
    return {"rich": rich, "poor": poor, **ids}


async def test_audit_ok_after_a_real_saga_run(saga, payments_engine, orders_engine):
    topic = saga.settings.kafka.orders_topic
    rich = await open_account(payments_engine, 1000)
    poor = await open_account(payments_engine, 20)
    ids = [await place_order(orders_engine, rich, 100, topic) for _ in range(5)]
    ids += [await place_order(orders_engine, poor, 15, topic) for _ in range(3)]
    ids.append(await place_order(orders_engine, uuid.uuid4(), 1, topic))

    async with start_workers(saga.system("payments", "orders")):
        final = await wait_final(orders_engine, ids)

    assert [status for status, _ in final.values()].count("success") == 6
    report = await assert_audit_ok(payments_engine, orders_engine)
    assert report.facts == {
        "accounts_balance_total": 500 + 5,
        "deposits_total": 1020,
        "successful_orders_total": 515,
        "decisions": 9,
        "orders_in_flight": 0,
        "orders_awaiting_decision": 0,
    }
    assert report.to_json()["ok"] is True


async def test_ledger_entry_without_balance_change(settled, payments_engine, orders_engine):
    async with payments_engine.begin() as conn:
        await conn.execute(
            insert(ledger_entries).values(user_id=settled["rich"], kind="deposit", amount=7, reference="forged")
        )
    report = await audit(payments_engine, orders_engine)
    assert "balance_equals_ledger" in failing(report)
    assert any(str(settled["rich"]) in example for example in examples(report, "balance_equals_ledger"))
    assert report.to_json()["ok"] is False


async def test_balance_change_without_ledger_entry(settled, payments_engine, orders_engine):
    async with payments_engine.begin() as conn:
        await conn.execute(
            update(accounts).where(accounts.c.user_id == settled["poor"]).values(balance=accounts.c.balance + 1)
        )
    report = await audit(payments_engine, orders_engine)
    assert failing(report) == {"balance_equals_ledger", "conservation"}


async def test_succeeded_decision_without_debit(settled, payments_engine, orders_engine):
    ghost = settled["waiting"]  # a real order (rich, 1), decided "succeeded" with no debit behind it
    async with payments_engine.begin() as conn:
        await conn.execute(
            insert(payment_decisions).values(order_id=ghost, user_id=settled["rich"], amount=1, status="succeeded")
        )
    report = await audit(payments_engine, orders_engine)
    assert failing(report) == {"debited_at_most_once"}
    assert any(
        str(ghost) in example and "never debited" in example for example in examples(report, "debited_at_most_once")
    )


async def test_debit_of_a_refused_order(settled, payments_engine, orders_engine):
    """A debit whose decision says failed (ledger and balance kept in step, so only this check sees it)."""
    async with payments_engine.begin() as conn:
        await conn.execute(
            insert(ledger_entries).values(
                user_id=settled["poor"], kind="debit", amount=5, reference=str(settled["refused"])
            )
        )
        await conn.execute(update(accounts).where(accounts.c.user_id == settled["poor"]).values(balance=5))
    report = await audit(payments_engine, orders_engine)
    assert "debited_at_most_once" in failing(report)
    assert "balance_equals_ledger" not in failing(report)


async def test_order_success_without_decision(settled, payments_engine, orders_engine):
    async with orders_engine.begin() as conn:
        await conn.execute(update(orders).where(orders.c.id == settled["waiting"]).values(status="success"))
    report = await audit(payments_engine, orders_engine)
    # The unpaid success also inflates the successful total, so money no longer adds up either.
    assert failing(report) == {"orders_match_decisions", "conservation"}
    assert any(str(settled["waiting"]) in example for example in examples(report, "orders_match_decisions"))


async def test_order_success_whose_payment_failed(settled, payments_engine, orders_engine):
    async with orders_engine.begin() as conn:
        await conn.execute(
            update(orders).where(orders.c.id == settled["refused"]).values(status="success", reason=None)
        )
    report = await audit(payments_engine, orders_engine)
    assert failing(report) == {"orders_match_decisions", "conservation"}


async def test_order_failed_whose_payment_succeeded(settled, payments_engine, orders_engine):
    """The customer was charged for an order the shop shows as failed."""
    async with orders_engine.begin() as conn:
        await conn.execute(
            update(orders).where(orders.c.id == settled["paid"]).values(status="failed", reason="insufficient_funds")
        )
    report = await audit(payments_engine, orders_engine)
    assert failing(report) == {"orders_match_decisions", "conservation"}


async def test_a_forged_payment_request_is_named_by_its_order_and_ledger_entry(settled, payments_engine, orders_engine):
    """The payments side is self-consistent (decision, debit, balance), but the money paid for an
    order that does not exist (a forged `order.created`): the audit names that order and its debit."""
    forged = uuid.uuid4()
    async with payments_engine.begin() as conn:
        await payments_ops.process_payments(
            conn, [PaymentRequest(order_id=forged, user_id=settled["rich"], amount=123)]
        )
    report = await audit(payments_engine, orders_engine)
    assert failing(report) == {"decisions_have_orders", "conservation"}
    (named,) = examples(report, "decisions_have_orders")
    assert f"unknown order {forged}" in named and f"user {settled['rich']}" in named
    assert f"debited 123 (ledger reference {forged})" in named
    assert "never created" in examples(report, "conservation")[0]
    assert report.facts["accounts_balance_total"] + report.facts["successful_orders_total"] == (
        report.facts["deposits_total"] - 123
    )


async def test_a_decision_on_other_terms_than_the_order_is_named(settled, payments_engine, orders_engine):
    async with orders_engine.connect() as conn:
        waiting = await orders_ops.get_order(conn, settled["waiting"])
    async with payments_engine.begin() as conn:
        await payments_ops.process_payments(
            conn, [PaymentRequest(order_id=waiting.id, user_id=waiting.user_id, amount=waiting.amount + 1)]
        )
    report = await audit(payments_engine, orders_engine)
    assert "orders_match_decisions" in failing(report)
    assert any(f"order {waiting.id} is for {waiting.amount}" in e for e in examples(report, "orders_match_decisions"))


async def test_conservation_names_orders_in_flight(settled, payments_engine, orders_engine):
    """Decided and debited but not yet settled on the orders side: reported as in flight."""
    async with orders_engine.connect() as conn:
        waiting = await orders_ops.get_order(conn, settled["waiting"])
    async with payments_engine.begin() as conn:
        await payments_ops.process_payments(
            conn, [PaymentRequest(order_id=waiting.id, user_id=waiting.user_id, amount=waiting.amount)]
        )
    report = await audit(payments_engine, orders_engine)
    assert failing(report) == {"conservation"}
    assert report.facts["orders_in_flight"] == 1
    assert "in flight" in examples(report, "conservation")[0]
    await settle(payments_engine, orders_engine, [waiting.id])
    await assert_audit_ok(payments_engine, orders_engine)


# --- what the database itself refuses -------------------------------------------------------------


async def test_negative_balance_is_refused_by_the_database(settled, payments_engine, orders_engine):
    with pytest.raises(IntegrityError, match="balance_not_negative"):
        async with payments_engine.begin() as conn:
            await conn.execute(update(accounts).where(accounts.c.user_id == settled["poor"]).values(balance=-1))
    with pytest.raises(IntegrityError, match="balance_not_negative"):
        async with payments_engine.begin() as conn:
            await conn.execute(insert(accounts).values(user_id=uuid.uuid4(), balance=-5))
    await assert_audit_ok(payments_engine, orders_engine)


async def test_second_debit_or_decision_for_an_order_is_refused_by_the_database(
    settled, payments_engine, orders_engine
):
    with pytest.raises(IntegrityError):
        async with payments_engine.begin() as conn:
            await conn.execute(
                insert(ledger_entries).values(
                    user_id=settled["rich"], kind="debit", amount=300, reference=str(settled["paid"])
                )
            )
    with pytest.raises(IntegrityError):
        async with payments_engine.begin() as conn:
            await conn.execute(
                insert(payment_decisions).values(
                    order_id=settled["paid"], user_id=settled["rich"], amount=300, status="succeeded"
                )
            )
    await assert_audit_ok(payments_engine, orders_engine)
