"""Forged, replayed, moved and mismatched events on the real broker (embedded, or Apache Kafka in CI
stage 2): each is quarantined with its reason, and no balance, ledger entry, decision or order changes.

The attacker here can write to both topics (a shared broker) but holds no service's secret. The
records it replays were signed by the real services; the mismatched results are signed with the
payments secret (a payments service with a bug, or a leaked secret): the orders side's own check
of its facts still refuses them.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select

from hsepay.orders.tables import inbox as orders_inbox
from hsepay.payments.tables import inbox as payments_inbox
from hsepay.payments.tables import outbox as payments_outbox
from hsepay.relay.envelope import new_message
from hsepay.relay.signing import EventSigner
from hsepay.relay.store import INBOX_PROCESSED, INBOX_QUARANTINED
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final
from tests.support import (
    assert_audit_ok,
    ensure_saga_topics,
    kafka_producer,
    open_account,
    order_created_row,
    orders_snapshot,
    payments_snapshot,
    place_order,
    poll_until,
    publish,
    relay_signer,
    wait_caught_up,
)

STRANGER = EventSigner("orders", b"an attacker's own secret, 32 bytes+")


def _order_created(topic: str, *, order_id: uuid.UUID, user: uuid.UUID, amount) -> object:
    return new_message(
        topic=topic,
        key=str(user),
        event_type="order.created",
        data={"order_id": str(order_id), "user_id": str(user), "amount": amount},
        correlation_id=str(order_id),
    )


def _result(topic: str, kind: str, *, order_id: uuid.UUID, user: uuid.UUID, amount: int) -> object:
    data = {"order_id": str(order_id), "user_id": str(user), "amount": amount}
    if kind == "payment.failed":
        data["reason"] = "insufficient_funds"
    return new_message(topic=topic, key=str(order_id), event_type=kind, data=data, correlation_id=str(order_id))


async def _quarantined(engine, inbox, consumer: str) -> dict[tuple[str, int, int], str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(inbox.c.topic, inbox.c.partition, inbox.c.offset, inbox.c.error).where(
                inbox.c.consumer == consumer, inbox.c.status == INBOX_QUARANTINED
            )
        )
        return {(r.topic, r.partition, r.offset): r.error for r in rows}


async def test_forged_replayed_and_mismatched_events_change_nothing(saga, payments_engine, orders_engine):
    kafka = saga.settings.kafka
    orders_topic, status_topic = kafka.orders_topic, kafka.payment_status_topic
    orders_signer, payments_signer = relay_signer(saga, "orders"), relay_signer(saga, "payments")
    victim = await open_account(payments_engine, 1000)
    broke = await open_account(payments_engine, 0)
    await ensure_saga_topics(saga)

    # Orders whose payment requests the orders relay never sends (it stays off): only forgeries
    # could settle them. `paid` goes through the real saga, published as its relay would.
    unpaid = await place_order(orders_engine, broke, 500, orders_topic)
    victims_order = await place_order(orders_engine, victim, 40, orders_topic)
    paid = await place_order(orders_engine, victim, 100, orders_topic)
    before_payments = await payments_snapshot(payments_engine)

    forged_debit = _order_created(orders_topic, order_id=uuid.uuid4(), user=victim, amount=900)
    # A request the orders relay signed longer ago than the inbox remembers event ids.
    old_request = await order_created_row(orders_engine, victims_order)
    long_ago = EventSigner(
        "orders",
        orders_signer.secret,
        clock=lambda: orders_signer.clock() - saga.settings.consumer.inbox_retention - 3600,
    )
    expected: dict[str, tuple[object, str]] = {}  # name -> (record metadata, reason)

    async with (
        start_workers(saga.system("payments")),
        start_workers(saga.system("orders", relays=False)),
        kafka_producer(kafka.bootstrap_servers) as producer,
    ):
        # --- against the payments side: order.created --------------------------------------
        expected["unsigned order.created"] = (await publish(producer, forged_debit, signer=None), "unsigned")
        expected["order.created with an unknown secret"] = (
            await publish(producer, forged_debit, signer=STRANGER),
            "does not verify",
        )
        expected["order.created with the payments secret"] = (
            await publish(producer, forged_debit, signer=EventSigner("payments", payments_signer.secret)),
            "does not verify",
        )
        moved = _order_created(status_topic, order_id=victims_order, user=victim, amount=40)
        expected["order.created signed, then moved to another topic"] = (
            await _publish_signed_elsewhere(producer, moved, orders_topic, orders_signer),
            "does not verify",
        )
        expected["order.created replayed after the inbox forgot it"] = (
            await publish(producer, old_request, signer=long_ago),
            "refused as a replay",
        )
        string_amount = _order_created(orders_topic, order_id=uuid.uuid4(), user=victim, amount="5")
        expected["order.created with a string amount"] = (
            await publish(producer, string_amount, signer=orders_signer),
            "invalid order.created data: Expected `int`, got `str`",
        )

        # --- against the orders side: payment.succeeded / payment.failed --------------------
        success = _result(status_topic, "payment.succeeded", order_id=unpaid, user=broke, amount=500)
        expected["unsigned payment.succeeded"] = (await publish(producer, success, signer=None), "unsigned")
        expected["payment.succeeded with the orders secret"] = (
            await publish(producer, success, signer=EventSigner("payments", orders_signer.secret)),
            "does not verify",
        )
        failure = _result(status_topic, "payment.failed", order_id=unpaid, user=broke, amount=500)
        expected["payment.failed with an unknown secret"] = (
            await publish(producer, failure, signer=EventSigner("payments", STRANGER.secret)),
            "does not verify",
        )
        other_user = _result(status_topic, "payment.succeeded", order_id=unpaid, user=victim, amount=500)
        expected["signed payment.succeeded for another user"] = (
            await publish(producer, other_user, signer=payments_signer),
            f"does not match order {unpaid}",
        )
        other_amount = _result(status_topic, "payment.succeeded", order_id=unpaid, user=broke, amount=1)
        expected["signed payment.succeeded for another amount"] = (
            await publish(producer, other_amount, signer=payments_signer),
            f"does not match order {unpaid}",
        )
        other_failure = _result(status_topic, "payment.failed", order_id=victims_order, user=victim, amount=41)
        expected["signed payment.failed for another amount"] = (
            await publish(producer, other_failure, signer=payments_signer),
            f"does not match order {victims_order}",
        )
        nowhere = uuid.uuid4()
        no_order = _result(status_topic, "payment.succeeded", order_id=nowhere, user=victim, amount=5)
        expected["signed payment.succeeded for no order"] = (
            await publish(producer, no_order, signer=payments_signer),
            f"order {nowhere}, which does not exist",
        )

        # --- and the real saga, meanwhile, still works ------------------------------------
        await publish(producer, await order_created_row(orders_engine, paid), signer=orders_signer)
        await poll_until(lambda: _one_answer(payments_engine), what="the payments answer to the real order")
        async with payments_engine.connect() as conn:
            answer = (await conn.execute(select(payments_outbox))).one()
        assert (await wait_final(orders_engine, [paid]))[paid] == ("success", None)  # its relay is on

        # A copy of the real answer (signed by payments, applied already) is absorbed by the inbox.
        async with kafka_producer(kafka.bootstrap_servers) as second:
            await publish(second, answer, signer=payments_signer)
        await wait_caught_up(saga, "payments", orders_topic)
        await wait_caught_up(saga, "orders", status_topic)

    payments_quarantine = await _quarantined(payments_engine, payments_inbox, "payments")
    orders_quarantine = await _quarantined(orders_engine, orders_inbox, "orders")
    quarantine = {**payments_quarantine, **orders_quarantine}
    for name, (meta, reason) in expected.items():
        error = quarantine.get((meta.topic, meta.partition, meta.offset))
        assert error is not None, f"{name}: not quarantined"
        assert reason in error, f"{name}: {error}"
    assert len(quarantine) == len(expected)

    # Nothing moved but the one real order.
    after = await payments_snapshot(payments_engine)
    assert after["balances"] == {victim: 900, broke: 0}
    assert after["ledger"] == sorted([*before_payments["ledger"], ("debit", str(paid), 100)])
    assert after["decisions"] == {paid: ("succeeded", None, 100)}
    orders_now = await orders_snapshot(orders_engine)
    assert {order: status[:2] for order, status in orders_now.items()} == {
        unpaid: ("created", None),
        victims_order: ("created", None),
        paid: ("success", None),
    }
    async with orders_engine.connect() as conn:
        processed = (
            await conn.execute(select(orders_inbox.c.event_id).where(orders_inbox.c.status == INBOX_PROCESSED))
        ).all()
    assert [row.event_id for row in processed] == [answer.event_id]  # the copy was a duplicate
    await assert_audit_ok(payments_engine, orders_engine)


async def _one_answer(payments_engine) -> bool:
    async with payments_engine.connect() as conn:
        return len((await conn.execute(select(payments_outbox.c.id))).all()) == 1


async def _publish_signed_elsewhere(producer, message, signed_for: str, signer: EventSigner):
    """Publish `message` on its own topic with the signature its producer made for `signed_for`."""
    headers = dict(message.headers)
    headers["signature"] = signer.sign(signed_for, message.key.encode(), message.value, headers)
    return await producer.send_and_wait(
        message.topic,
        value=message.value,
        key=message.key.encode(),
        headers=[(k, v.encode()) for k, v in headers.items()],
    )
