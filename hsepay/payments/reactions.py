"""Payments' reaction to `order.created`: decide, debit, answer — all in the inbox transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.payments import operations
from hsepay.payments.events import ORDER_CREATED, payment_result
from hsepay.payments.model import PaymentRequest
from hsepay.payments.tables import outbox
from hsepay.relay.inbound import Consumed, EventHandler, HandlerMap
from hsepay.relay.store import enqueue


def make_handlers(*, payment_status_topic: str) -> HandlerMap:
    async def on_order_created(conn: AsyncConnection, events: Sequence[Consumed[PaymentRequest]]) -> None:
        decisions = await operations.process_payments(conn, [event.data for event in events])
        await enqueue(
            conn,
            outbox,
            [
                payment_result(decision, topic=payment_status_topic, causation_id=event.event_id)
                for event, decision in zip(events, decisions, strict=True)
            ],
        )

    return {ORDER_CREATED: EventHandler(schema=PaymentRequest, apply=on_order_created)}
