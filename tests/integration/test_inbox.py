"""The inbox against the real broker and PostgreSQL: duplicates, full replays (with and without the
inbox rows), poison messages and handlers that keep failing."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import msgspec
import pytest
from sqlalchemy import delete, select

from hsepay import registry
from hsepay.bootstrap.event_secrets import verifier_of
from hsepay.config import ConsumerSettings
from hsepay.orders.tables import inbox as orders_inbox
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments.model import PaymentRequest
from hsepay.payments.reactions import make_handlers as payments_handlers
from hsepay.payments.tables import inbox as payments_inbox
from hsepay.payments.tables import ledger_entries, payment_decisions
from hsepay.payments.tables import outbox as payments_outbox
from hsepay.relay.consumer import InboxConsumer
from hsepay.relay.envelope import new_message
from hsepay.relay.inbound import EventHandler
from hsepay.relay.quarantine import inbox_status, retry_quarantined
from hsepay.relay.store import INBOX_PROCESSED, INBOX_QUARANTINED, driver_connection
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final
from tests.support import (
    assert_audit_ok,
    broker_of,
    committed_offsets,
    count,
    ensure_saga_topics,
    kafka_producer,
    open_account,
    order_created_row,
    orders_snapshot,
    outbox_messages,
    payments_snapshot,
    place_order,
    poll_until,
    publish,
    relay_signer,
    wait_caught_up,
)


def _regrouped(saga, prefix: str):
    """The same saga with other consumer groups: they start from offset 0 of every topic."""
    return saga.with_settings(kafka=replace(saga.settings.kafka, group_prefix=prefix))


async def _inbox_rows(engine, inbox, consumer: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(inbox).where(inbox.c.consumer == consumer))).all()


# --- the same event twice ------------------------------------------------------------------------


async def test_same_event_delivered_twice_through_kafka_debits_once(saga, payments_engine, orders_engine):
    topic = saga.settings.kafka.orders_topic
    user = await open_account(payments_engine, 1000)
    order_id = await place_order(orders_engine, user, 300, topic)
    row = await order_created_row(orders_engine, order_id)
    await ensure_saga_topics(saga)

    # The orders relay stays off: the only copies of order.created are the two published here.
    async with (
        start_workers(saga.system("payments")),
        start_workers(saga.system("orders", relays=False)),
        kafka_producer(saga.settings.kafka.bootstrap_servers) as producer,
    ):
        signer = relay_signer(saga, "orders")
        first = await publish(producer, row, signer=signer)
        second = await publish(producer, row, signer=signer)
        assert (first.partition, first.offset + 1) == (second.partition, second.offset)
        final = await wait_final(orders_engine, [order_id])
        await wait_caught_up(saga, "payments", topic)

    assert final[order_id] == ("success", None)
    snapshot = await payments_snapshot(payments_engine)
    assert snapshot["balances"][user] == 700
    assert [entry for entry in snapshot["ledger"] if entry[0] == "debit"] == [("debit", str(order_id), 300)]
    assert snapshot["decisions"] == {order_id: ("succeeded", None, 300)}
    inbox_rows = await _inbox_rows(payments_engine, payments_inbox, "payments")
    assert [(r.event_id, r.status) for r in inbox_rows] == [(row.event_id, INBOX_PROCESSED)]
    assert await count(payments_engine, payments_outbox) == 1  # one answer, not two
    await assert_audit_ok(payments_engine, orders_engine)


async def test_same_batch_applied_twice_has_one_effect(saga, payments_engine, orders_engine):
    topic = saga.settings.kafka.orders_topic
    rich = await open_account(payments_engine, 500)
    poor = await open_account(payments_engine, 50)
    paid = await place_order(orders_engine, rich, 200, topic)
    refused = await place_order(orders_engine, poor, 80, topic)
    async with orders_engine.connect() as conn:
        rows = (await conn.execute(select(orders_outbox).order_by(orders_outbox.c.id))).all()
    messages = outbox_messages(rows, signer=relay_signer(saga, "orders"))
    payments = saga.system("payments", relays=False)["payments"].consumer

    assert await payments.apply(messages + messages[:1])  # a duplicate inside the batch, too
    assert await payments.apply(messages)
    assert await payments.apply(list(reversed(messages)))

    snapshot = await payments_snapshot(payments_engine)
    assert snapshot["balances"] == {rich: 300, poor: 50}
    assert [entry for entry in snapshot["ledger"] if entry[0] == "debit"] == [("debit", str(paid), 200)]
    assert snapshot["decisions"] == {
        paid: ("succeeded", None, 200),
        refused: ("failed", "insufficient_funds", 80),
    }
    assert len(await _inbox_rows(payments_engine, payments_inbox, "payments")) == 2
    assert payments.stats.processed == 2
    async with payments_engine.connect() as conn:
        answers = (await conn.execute(select(payments_outbox).order_by(payments_outbox.c.id))).all()
    assert len(answers) == 2

    # Close the loop by hand: the orders consumer applies the answers, twice.
    orders = saga.system("orders", relays=False)["orders"].consumer
    answered = outbox_messages(answers, signer=relay_signer(saga, "payments"))
    assert await orders.apply(answered)
    assert await orders.apply(answered)
    assert (await orders_snapshot(orders_engine))[paid][:2] == ("success", None)
    assert (await orders_snapshot(orders_engine))[refused][:2] == ("failed", "insufficient_funds")
    assert len(await _inbox_rows(orders_engine, orders_inbox, "orders")) == 2
    await assert_audit_ok(payments_engine, orders_engine)


# --- full replay -----------------------------------------------------------------------------------


async def test_full_replay_with_and_without_inbox_changes_no_money(saga, payments_engine, orders_engine):
    topic = saga.settings.kafka.orders_topic
    users = [await open_account(payments_engine, balance) for balance in (1000, 100, 0)]
    stranger = uuid.uuid4()
    ids = []
    for i in range(24):
        user = (users + [stranger])[i % 4]
        ids.append(await place_order(orders_engine, user, 10 + 20 * (i % 3), topic))

    async with start_workers(saga.system("payments", "orders")):
        final = await wait_final(orders_engine, ids)
        await wait_caught_up(saga, "payments", topic)
    assert {status for status, _ in final.values()} == {"success", "failed"}
    before = await payments_snapshot(payments_engine)
    orders_before = await orders_snapshot(orders_engine)
    answers_before = await count(payments_engine, payments_outbox)
    assert answers_before == len(ids)
    await assert_audit_ok(payments_engine, orders_engine)

    # 1. A new consumer group reads the orders topic from offset 0: every event is an inbox duplicate.
    replay = _regrouped(saga, f"{saga.settings.kafka.group_prefix}-replay1")
    async with start_workers(replay.system("payments", relays=False)) as workers:
        await wait_caught_up(replay, "payments", topic)
        stats = workers.consumers["payments"].stats
    assert stats.processed == 0
    assert await payments_snapshot(payments_engine) == before
    assert await count(payments_engine, payments_outbox) == answers_before

    # 2. The inbox forgot everything (retention): every event is handled again, answered from the
    #    recorded decisions, and nothing is debited a second time.
    async with payments_engine.begin() as conn:
        deleted = await conn.execute(delete(payments_inbox).where(payments_inbox.c.consumer == "payments"))
    assert deleted.rowcount == len(ids)
    replay = _regrouped(saga, f"{saga.settings.kafka.group_prefix}-replay2")
    async with (
        start_workers(replay.system("payments")) as workers,
        start_workers(saga.system("orders", relays=False)),
    ):
        await wait_caught_up(replay, "payments", topic)
        assert workers.consumers["payments"].stats.processed == len(ids)
        # The orders side receives a second answer for every order and settles nothing new.
        await poll_until(
            _at_least(lambda: count(orders_engine, orders_inbox), 2 * len(ids)),
            what="the re-sent answers to reach the orders inbox",
        )
        await wait_caught_up(saga, "orders", saga.settings.kafka.payment_status_topic)

    assert await payments_snapshot(payments_engine) == before
    assert await orders_snapshot(orders_engine) == orders_before  # status, reason and updated_at
    async with payments_engine.connect() as conn:
        answers = (
            await conn.execute(select(payments_outbox).order_by(payments_outbox.c.id).offset(answers_before))
        ).all()
    assert len(answers) == len(ids)
    for answer in answers:
        data = msgspec.json.decode(answer.value)["data"]
        order_id = uuid.UUID(data["order_id"])
        status, reason, amount = before["decisions"][order_id]
        assert answer.event_type == f"payment.{status}"
        assert (data.get("reason"), data["amount"]) == (reason, amount)
    await assert_audit_ok(payments_engine, orders_engine)


def _at_least(counter, minimum: int):
    async def check() -> bool:
        return await counter() >= minimum

    return check


# --- poison messages ---------------------------------------------------------------------------------


async def test_poison_messages_are_quarantined_and_the_partition_keeps_flowing(saga, payments_engine, orders_engine):
    kafka = saga.settings.kafka
    topic = kafka.orders_topic
    user = await open_account(payments_engine, 1000)
    key = str(user)
    await ensure_saga_topics(saga)

    def envelope(event_type: str, data: dict) -> object:
        return new_message(topic=topic, key=key, event_type=event_type, data=data, correlation_id=str(uuid.uuid4()))

    garbage = b"\x00\xff{ this is not json"
    negative = envelope("order.created", {"order_id": str(uuid.uuid4()), "user_id": key, "amount": -5})
    not_uuid = envelope("order.created", {"order_id": "not-a-uuid", "user_id": key, "amount": 5})
    unknown = envelope("order.exploded", {"order_id": str(uuid.uuid4())})

    ids: list[uuid.UUID] = []
    poison: dict[str, object] = {}  # name -> RecordMetadata
    partitions = set()
    # Signed by the orders service: what is tested here is what it signed, not who sent it.
    signer = relay_signer(saga, "orders")
    async with kafka_producer(kafka.bootstrap_servers) as producer:

        async def valid(amount: int) -> None:
            order_id = await place_order(orders_engine, user, amount, topic)
            ids.append(order_id)
            row = await order_created_row(orders_engine, order_id)
            partitions.add((await publish(producer, row, signer=signer)).partition)

        await valid(100)
        signature = signer.sign(topic, key.encode(), garbage, {})
        poison["garbage"] = await producer.send_and_wait(
            topic, value=garbage, key=key.encode(), headers=[("signature", signature.encode())]
        )
        await valid(100)
        poison["negative"] = await publish(producer, negative, signer=signer)
        poison["not_uuid"] = await publish(producer, not_uuid, signer=signer)
        await valid(100)
        poison["unknown"] = await publish(producer, unknown, signer=signer)
        await valid(100)
        partitions |= {meta.partition for meta in poison.values()}
        assert len(partitions) == 1  # one key, one partition: poison sits between valid orders

        async with start_workers(saga.system("payments")), start_workers(saga.system("orders", relays=False)):
            final = await wait_final(orders_engine, ids)
            await wait_caught_up(saga, "payments", topic)

    assert set(final.values()) == {("success", None)}
    (partition,) = partitions
    last_poison = max(meta.offset for meta in poison.values())
    committed = await committed_offsets(kafka.bootstrap_servers, saga.settings.kafka.group_of("payments"), topic)
    assert committed[partition] is not None and committed[partition] > last_poison

    async with payments_engine.connect() as conn:
        status = await inbox_status(conn, payments_inbox, "payments")
    assert (status["processed"], status["quarantined"]) == (len(ids), len(poison))
    seen = {(q["partition"], q["offset"]): q for q in status["quarantined_recent"]}
    expected_errors = {
        "garbage": "not an event envelope",
        "negative": "invalid order.created data",
        "not_uuid": "invalid order.created data",
        "unknown": "no handler for event type 'order.exploded'",
    }
    for name, meta in poison.items():
        entry = seen[(meta.partition, meta.offset)]
        assert expected_errors[name] in entry["error"], (name, entry)
        assert entry["attempts"] == 1
    assert seen[(poison["negative"].partition, poison["negative"].offset)]["event_id"] == str(negative.event_id)

    # Retrying cannot cure malformed messages: they stay quarantined, and say they were retried.
    spec = registry.get("payments")
    assert await retry_quarantined(
        payments_engine,
        payments_inbox,
        consumer="payments",
        handlers=spec.handlers(saga.settings),
        verifier=verifier_of(saga.settings, spec),
    ) == (0, 4)
    async with payments_engine.connect() as conn:
        status = await inbox_status(conn, payments_inbox, "payments")
    assert status["quarantined"] == 4
    assert {q["attempts"] for q in status["quarantined_recent"]} == {2}
    assert all(q["error"] for q in status["quarantined_recent"])
    await assert_audit_ok(payments_engine, orders_engine)


@pytest.mark.parametrize("fault", ["python", "database"])
async def test_failing_handler_is_quarantined_after_max_attempts_then_retried(
    saga, payments_engine, orders_engine, fault
):
    """`database`: the handler's own writes are queued in the transaction's pipeline, then a
    statement fails in PostgreSQL; the error surfaces at COMMIT and everything of the batch rolls back."""
    kafka = saga.settings.kafka
    topic = kafka.orders_topic
    user = await open_account(payments_engine, 1000)
    doomed = await place_order(orders_engine, user, 300, topic)
    healthy = await place_order(orders_engine, user, 200, topic)
    await ensure_saga_topics(saga)

    real = payments_handlers(payment_status_topic=kafka.payment_status_topic)["order.created"]
    calls: list[uuid.UUID] = []

    async def flaky(conn, events):
        calls.extend(event.data.order_id for event in events)
        broken = any(event.data.order_id == doomed for event in events)
        if broken and fault == "python":
            raise RuntimeError("payments handler is broken for this order")
        await real.apply(conn, events)
        if broken:  # after the real writes, so that they must roll back with the batch
            await (await driver_connection(conn)).execute("SELECT 1 / 0")

    consumer = InboxConsumer(
        name="payments",
        engine=payments_engine,
        inbox_table=payments_inbox,
        handlers={"order.created": EventHandler(schema=PaymentRequest, apply=flaky)},
        broker=broker_of(saga),
        topics=(topic,),
        group_id=saga.settings.kafka.group_of("payments"),
        settings=ConsumerSettings(batch_size=500, max_attempts=3),
    )
    stop = asyncio.Event()
    async with (
        start_workers(saga.system("payments", consumers=False)),  # the payments relay sends the answers
        start_workers(saga.system("orders")),  # the orders relay sends the requests
    ):
        task = asyncio.create_task(consumer.consume_forever(stop))
        try:
            await wait_final(orders_engine, [healthy])
            await wait_caught_up(saga, "payments", topic)
        finally:
            stop.set()
            await task

        rows = {r.event_id: r for r in await _inbox_rows(payments_engine, payments_inbox, "payments")}
        doomed_event = (await order_created_row(orders_engine, doomed)).event_id
        quarantined = rows[doomed_event]
        assert quarantined.status == INBOX_QUARANTINED
        assert quarantined.attempts == 3
        assert "failed 3 times" in quarantined.error
        assert ("RuntimeError" if fault == "python" else "division by zero") in quarantined.error
        assert calls.count(doomed) >= 3
        assert await count(payments_engine, payment_decisions, payment_decisions.c.order_id == doomed) == 0
        assert (await orders_snapshot(orders_engine))[doomed][0] == "created"

        # The fix is deployed: retrying applies the quarantined message with the real handlers.
        handlers = registry.get("payments").handlers(saga.settings)
        assert await retry_quarantined(payments_engine, payments_inbox, consumer="payments", handlers=handlers) == (
            1,
            0,
        )
        final = await wait_final(orders_engine, [doomed])

    assert final[doomed] == ("success", None)
    rows = {r.event_id: r for r in await _inbox_rows(payments_engine, payments_inbox, "payments")}
    assert rows[doomed_event].status == INBOX_PROCESSED and rows[doomed_event].error is None
    assert await count(payments_engine, ledger_entries, ledger_entries.c.kind == "debit") == 2
    assert (await payments_snapshot(payments_engine))["balances"][user] == 500
    await assert_audit_ok(payments_engine, orders_engine)
