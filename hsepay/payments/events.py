"""The events the payments service emits (DESIGN §4; declared in hsepay.events with the one it consumes)."""

from __future__ import annotations

import uuid

from hsepay.events import PaymentFailed, PaymentSucceeded, outbox_message
from hsepay.payments.model import PaymentDecision
from hsepay.relay.envelope import OutboxMessage


def payment_result(decision: PaymentDecision, *, topic: str, causation_id: uuid.UUID) -> OutboxMessage:
    """`payment.succeeded` or `payment.failed` with its reason, keyed by order, caused by the request."""
    event: PaymentSucceeded | PaymentFailed
    if decision.succeeded:
        event = PaymentSucceeded(order_id=decision.order_id, user_id=decision.user_id, amount=decision.amount)
    else:
        assert decision.reason in ("insufficient_funds", "account_not_found"), decision.reason
        event = PaymentFailed(
            order_id=decision.order_id, user_id=decision.user_id, amount=decision.amount, reason=decision.reason
        )
    return outbox_message(
        event,
        topic=topic,
        key=str(decision.order_id),
        correlation_id=str(decision.order_id),
        causation_id=str(causation_id),
    )
