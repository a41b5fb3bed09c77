"""Payments' reaction to `order.created`: decide, debit, answer — all in the inbox transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.events import OrderCreated
from hsepay.payments import operations
from hsepay.payments.events import payment_result
from hsepay.payments.tables import outbox
from hsepay.relay.inbound import Consumed, EventHandler, HandlerMap
from hsepay.relay.store import enqueue

log = logging.getLogger(__name__)


def make_handlers(*, payment_status_topic: str) -> HandlerMap:
    async def on_order_created(conn: AsyncConnection, events: Sequence[Consumed[OrderCreated]]) -> None:
        decisions = await operations.process_payments(conn, [event.data for event in events])
        await enqueue(
            conn,
            outbox,
            [
                payment_result(decision, topic=payment_status_topic, causation_id=event.event_id)
                for event, decision in zip(events, decisions, strict=True)
            ],
        )
        if log.isEnabledFor(logging.DEBUG):
            for event, decision in zip(events, decisions, strict=True):
                order_id = str(decision.order_id)
                extra = {"order_id": order_id, "event_id": str(event.event_id)}
                extra["correlation_id"] = event.headers.get("correlation_id", order_id)
                log.debug(
                    "payment for order %s %s (%s)", order_id, decision.status, decision.reason or "-", extra=extra
                )

    return {OrderCreated.TYPE: EventHandler(schema=OrderCreated, apply=on_order_created)}
