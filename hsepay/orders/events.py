"""Events the orders service emits and consumes (DESIGN §4). Version 1 of each."""

from __future__ import annotations

import uuid

from hsepay.relay.envelope import OutboxMessage, new_message

ORDER_CREATED = "order.created"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"


def payment_requested(*, order_id: uuid.UUID, user_id: uuid.UUID, amount: int, topic: str) -> OutboxMessage:
    """`order.created`: asks the payments side to debit `amount` for this order (keyed by user)."""
    return new_message(
        topic=topic,
        key=str(user_id),
        event_type=ORDER_CREATED,
        data={"order_id": str(order_id), "user_id": str(user_id), "amount": amount},
        correlation_id=str(order_id),
    )
