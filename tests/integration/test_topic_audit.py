"""The audit against the topics (issue 22): a tail both databases lost in one failover passes every
money check, and only the topics can name it; the repair recreates the lost orders from their
payment requests and the re-drive settles them, each debited once.

The loss is made with SQL here, exactly as an asynchronous failover leaves it (each database without
its last commits: orders, decisions, debits, inbox and outbox rows), so it runs on the embedded
engines in every CI stage; tests/ha/test_async_loss.py makes the same loss with a real failover.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import delete, select, text, update

from hsepay.bootstrap.event_secrets import history_verifier
from hsepay.orders import operations as orders_ops
from hsepay.orders.tables import inbox as orders_inbox
from hsepay.orders.tables import orders
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments.tables import accounts, ledger_entries, payment_decisions
from hsepay.payments.tables import inbox as payments_inbox
from hsepay.payments.tables import outbox as payments_outbox
from hsepay.relay.envelope import Envelope
from hsepay.relay.history import HistoryEvent, TopicHistory
from hsepay.roles import start_workers
from hsepay.topic_audit import TopicWitness, compare_with_topics
from tests.integration.conftest import wait_final
from tests.support import (
    assert_audit_ok,
    broker_of,
    ensure_saga_topics,
    kafka_producer,
    open_account,
    order_created_row,
    place_order,
)


def failing(checks) -> dict[str, list[str]]:
    return {check.name: check.violations for check in checks if not check.ok}


async def forget_the_tail(payments_engine, orders_engine, lost: list[uuid.UUID]) -> None:
    """What a failover onto a standby that had not received the last commits leaves: every trace of
    these orders gone from both databases, each one still consistent."""
    ids = [str(order_id) for order_id in lost]
    async with orders_engine.begin() as conn:
        await conn.execute(delete(orders).where(orders.c.id.in_(lost)))
        await conn.execute(delete(orders_outbox).where(orders_outbox.c.headers["correlation_id"].astext.in_(ids)))
        await conn.execute(delete(orders_inbox).where(orders_inbox.c.headers["correlation_id"].astext.in_(ids)))
    async with payments_engine.begin() as conn:
        debits = (
            await conn.execute(
                delete(ledger_entries)
                .where(ledger_entries.c.kind == "debit", ledger_entries.c.reference.in_(ids))
                .returning(ledger_entries.c.user_id, ledger_entries.c.amount)
            )
        ).all()
        for user_id, amount in debits:
            await conn.execute(
                update(accounts).where(accounts.c.user_id == user_id).values(balance=accounts.c.balance + amount)
            )
        await conn.execute(delete(payment_decisions).where(payment_decisions.c.order_id.in_(lost)))
        await conn.execute(delete(payments_inbox).where(payments_inbox.c.headers["correlation_id"].astext.in_(ids)))
        await conn.execute(delete(payments_outbox).where(payments_outbox.c.headers["correlation_id"].astext.in_(ids)))


async def compare(saga, payments_engine, orders_engine, *, verify: bool = True):
    kafka = saga.settings.kafka
    verifier = history_verifier(saga.settings) if verify else None
    witness = TopicWitness(
        broker_of(saga, "orders"), kafka.orders_topic, kafka.payment_status_topic, clock_margin=0.0, verifier=verifier
    )
    await witness.mark()
    async with payments_engine.connect() as p, orders_engine.connect() as o:
        await p.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await o.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await p.exec_driver_sql("SELECT 1")
        await o.exec_driver_sql("SELECT 1")
        return await witness.compare(p, o)


async def test_a_tail_both_databases_lost_is_named_by_the_topics_and_repaired(saga, payments_engine, orders_engine):
    topic = saga.settings.kafka.orders_topic
    user = await open_account(payments_engine, 1000)
    # Six different amounts: a lost order followed within a minute by an order of the same user and
    # amount is held back from the repair as a possible retry of the same purchase (the next test).
    ids = [await place_order(orders_engine, user, 100 + i, topic) for i in range(6)]
    async with start_workers(saga.system("payments", "orders")):
        await wait_final(orders_engine, ids)
    found = await compare(saga, payments_engine, orders_engine)
    assert failing(found.checks) == {}
    assert found.facts["requests_on_topic"] == 6 and found.facts["results_on_topic"] == 6

    lost = ids[3:]
    await forget_the_tail(payments_engine, orders_engine, lost)
    await assert_audit_ok(payments_engine, orders_engine)  # issue 22: the money audit alone passes

    found = await compare(saga, payments_engine, orders_engine)
    gaps = failing(found.checks)
    assert set(gaps) == {"requested_orders_exist", "results_applied", "results_have_decisions"}
    for name in gaps:
        assert sorted(str(i) for i in lost) == sorted(
            next(str(order_id) for order_id in lost if str(order_id) in line) for line in gaps[name]
        ), gaps[name]
    assert all("payments has no decision either" in line for line in gaps["requested_orders_exist"])
    assert all("lost the decision, and its debit with it" in line for line in gaps["results_have_decisions"])
    assert sorted(x.order_id for x in found.repairable) == sorted(lost)

    async with orders_engine.begin() as conn:
        restored = await orders_ops.restore_orders(
            conn, [(x.order_id, x.user_id, x.amount, x.requested_at) for x in found.repairable]
        )
        again = await orders_ops.restore_orders(
            conn, [(x.order_id, x.user_id, x.amount, x.requested_at) for x in found.repairable]
        )
    assert (restored, again) == (3, 0)

    quick = saga.with_settings(saga=replace(saga.settings.saga, redrive_after=0.1))
    async with start_workers(quick.system("payments", "orders")):
        final = await wait_final(orders_engine, lost)
    assert {status for status, _ in final.values()} == {"success"}
    async with payments_engine.connect() as conn:
        balance = (await conn.execute(select(accounts.c.balance).where(accounts.c.user_id == user))).scalar_one()
        debits = (
            (
                await conn.execute(
                    select(ledger_entries.c.reference).where(ledger_entries.c.kind == "debit").order_by(text("1"))
                )
            )
            .scalars()
            .all()
        )
    assert balance == 1000 - sum(100 + i for i in range(6)) and sorted(debits) == sorted(
        str(i) for i in ids
    )  # six orders, six debits, once each
    await assert_audit_ok(payments_engine, orders_engine)
    assert failing((await compare(saga, payments_engine, orders_engine)).checks) == {}


async def test_an_order_whose_request_never_reached_the_topic_is_named(saga, payments_engine, orders_engine):
    topic = saga.settings.kafka.orders_topic
    user = await open_account(payments_engine, 1000)
    first = await place_order(orders_engine, user, 10, topic)
    async with start_workers(saga.system("payments", "orders")):
        await wait_final(orders_engine, [first])
    # A request the relay marked sent but the broker lost (an in-memory broker restarted in between).
    vanished = await place_order(orders_engine, user, 20, topic)
    async with orders_engine.begin() as conn:
        await conn.execute(update(orders_outbox).where(orders_outbox.c.sent_at.is_(None)).values(sent_at=text("now()")))
    found = await compare(saga, payments_engine, orders_engine)
    assert list(failing(found.checks)) == ["orders_requested_on_topic"]
    (line,) = failing(found.checks)["orders_requested_on_topic"]
    assert str(vanished) in line and "the re-drive re-sends it" in line


async def test_a_lost_order_followed_by_the_same_purchase_is_named_not_restored(saga, payments_engine, orders_engine):
    """After a failover a client whose order was lost with its idempotency record may retry and get
    a new order: restoring the lost one too would charge that purchase twice."""
    topic = saga.settings.kafka.orders_topic
    user = await open_account(payments_engine, 1000)
    lost = await place_order(orders_engine, user, 70, topic)
    async with start_workers(saga.system("payments", "orders")):
        await wait_final(orders_engine, [lost])
    await forget_the_tail(payments_engine, orders_engine, [lost])
    retried = await place_order(orders_engine, user, 70, topic)
    found = await compare(saga, payments_engine, orders_engine)
    assert found.repairable == []
    (line,) = failing(found.checks)["requested_orders_exist"]
    assert str(lost) in line and f"possibly the same purchase as order {retried}: not repaired" in line


async def test_a_forged_payment_request_is_no_evidence_and_never_restored(saga, payments_engine, orders_engine):
    """Whoever can write to the orders topic without the orders service's secret must not make the
    audit report a lost order, nor `--repair` create one nobody placed."""
    topic = saga.settings.kafka.orders_topic
    await ensure_saga_topics(saga)
    user = await open_account(payments_engine, 1000)
    order_id = await place_order(orders_engine, user, 40, topic)  # never relayed: no worker runs here
    row = await order_created_row(orders_engine, order_id)
    async with orders_engine.begin() as conn:  # the forger's order exists nowhere but on the topic
        await conn.execute(delete(orders_outbox).where(orders_outbox.c.id == row.id))
        await conn.execute(delete(orders).where(orders.c.id == order_id))
    async with kafka_producer(saga.broker.bootstrap_servers) as producer:
        headers = [(name, value.encode()) for name, value in row.headers.items()]
        await producer.send_and_wait(row.topic, value=row.value, key=row.key.encode(), headers=headers)
        forged = [*headers, ("signature", b"t=1700000000000,v1=" + b"A" * 43)]
        await producer.send_and_wait(row.topic, value=row.value, key=row.key.encode(), headers=forged)

    unchecked = await compare(saga, payments_engine, orders_engine, verify=False)
    assert [x.order_id for x in unchecked.repairable] == [order_id]  # what the audit believed before

    found = await compare(saga, payments_engine, orders_engine)
    assert failing(found.checks) == {} and found.repairable == []
    assert found.facts["refused_signatures"] == 2


async def test_an_order_settled_by_a_later_result_than_the_cut_is_no_violation(saga, payments_engine, orders_engine):
    """After an asynchronous failover payments may lose a decision (succeeded) and decide again
    (failed: the balance changed). The order follows the new result; an audit run just after the
    re-drive sees the old result before its cut and the new one after it: consistent, not a gap."""
    topic = saga.settings.kafka.orders_topic
    user = await open_account(payments_engine, 1000)
    order_id = await place_order(orders_engine, user, 50, topic)
    async with orders_engine.begin() as conn:
        await conn.execute(
            update(orders).where(orders.c.id == order_id).values(status="failed", reason="insufficient_funds")
        )
    cut = time.time()
    results = saga.settings.kafka.payment_status_topic

    def result(kind: str, at: float, offset: int) -> HistoryEvent:
        data = {"order_id": str(order_id), "user_id": str(user), "amount": 50}
        envelope = Envelope(event_id=uuid.uuid4(), type=kind, occurred_at=datetime.fromtimestamp(at, UTC), data=data)
        return HistoryEvent(results, 0, offset, at, str(order_id), envelope)

    async def check(*events: HistoryEvent) -> dict[str, list[str]]:
        history = TopicHistory(events=list(events), partitions={results: 1})
        async with payments_engine.connect() as p, orders_engine.connect() as o:
            found = await compare_with_topics(p, o, history, orders_topic=topic, results_topic=results, before=cut)
        return {name: lines for name, lines in failing(found.checks).items() if name == "results_applied"}

    old = result("payment.succeeded", cut - 30, 0)
    assert await check(old)  # alone, the old result disagrees with the order: a violation
    assert await check(old, result("payment.failed", cut + 1, 1)) == {}
