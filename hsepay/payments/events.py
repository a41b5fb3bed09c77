"""Events the payments service consumes and emits (DESIGN §4). Version 1 of each."""

from __future__ import annotations

import uuid

from hsepay.payments.model import PaymentDecision
from hsepay.relay.envelope import OutboxMessage, new_message

ORDER_CREATED = "order.created"
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"


def payment_result(decision: PaymentDecision, *, topic: str, causation_id: uuid.UUID) -> OutboxMessage:
    data = {"order_id": str(decision.order_id), "user_id": str(decision.user_id), "amount": decision.amount}
    if decision.reason:
        data["reason"] = decision.reason
    return new_message(
        topic=topic,
        key=str(decision.order_id),
        event_type=PAYMENT_SUCCEEDED if decision.succeeded else PAYMENT_FAILED,
        data=data,
        correlation_id=str(decision.order_id),
        causation_id=str(causation_id),
    )
