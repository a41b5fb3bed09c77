"""The events of the saga (DESIGN §4), each declared once: its type, its version and its data.

The producing service builds one of these and writes it to its outbox (`outbox_message`); the
consuming service decodes the same class (its handler's `schema`), strictly: a string where an
amount belongs, a missing field, or a version of the event this code does not read is poison,
quarantined under its event id, never coerced or guessed at. A change an older consumer would
misread is a new VERSION of the event.

payments/ and orders/ never import each other (they meet only on the topics), so the contract
between them lives here, below both; tests/unit/test_event_contract.py checks that every event
one side can emit decodes on the other.
"""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

import msgspec

from hsepay.money import Amount
from hsepay.relay.envelope import OutboxMessage, new_message

__all__ = ["EVENTS", "Event", "FailureReason", "OrderCreated", "PaymentFailed", "PaymentSucceeded", "outbox_message"]

FailureReason = Literal["insufficient_funds", "account_not_found"]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """The `data` of one event type at one version (the envelope's `type` and `version`)."""

    TYPE: ClassVar[str]
    VERSION: ClassVar[int] = 1


class OrderCreated(Event, frozen=True, kw_only=True):
    """orders -> payments, topic `orders`, keyed by user: debit `amount` for this order, once."""

    TYPE = "order.created"
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Amount


class PaymentSucceeded(Event, frozen=True, kw_only=True):
    """payments -> orders, topic `payment-status`, keyed by order: the order's amount was debited."""

    TYPE = "payment.succeeded"
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Amount


class PaymentFailed(Event, frozen=True, kw_only=True):
    """payments -> orders, topic `payment-status`, keyed by order: refused, nothing was debited."""

    TYPE = "payment.failed"
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: Amount
    reason: FailureReason


EVENTS: tuple[type[Event], ...] = (OrderCreated, PaymentSucceeded, PaymentFailed)
"""Every event of the saga."""


def outbox_message(
    event: Event, *, topic: str, key: str, correlation_id: str, causation_id: str | None = None
) -> OutboxMessage:
    """`event` in its envelope (type and version from its class), with the Kafka headers of DESIGN §4."""
    return new_message(
        topic=topic,
        key=key,
        event_type=event.TYPE,
        version=event.VERSION,
        data=event,
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
