"""The event the orders service emits (DESIGN §4; declared in hsepay.events with those it consumes)."""

from __future__ import annotations

import uuid

from hsepay.events import OrderCreated, outbox_message
from hsepay.relay.envelope import OutboxMessage


def payment_requested(*, order_id: uuid.UUID, user_id: uuid.UUID, amount: int, topic: str) -> OutboxMessage:
    """`order.created`: asks the payments side to debit `amount` for this order (keyed by user)."""
    return outbox_message(
        OrderCreated(order_id=order_id, user_id=user_id, amount=amount),
        topic=topic,
        key=str(user_id),
        correlation_id=str(order_id),
    )
