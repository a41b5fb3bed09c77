"""The contract between the two services: every event one side can emit decodes, as the same typed
event, on the side that consumes it; a version the consumer does not read, or data that is not
exactly what the event declares, is poison (quarantined under its event id), never misread."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from hsepay import registry
from hsepay.config import Settings
from hsepay.events import EVENTS, OrderCreated, PaymentFailed, PaymentSucceeded
from hsepay.orders.events import payment_requested
from hsepay.payments.events import payment_result
from hsepay.payments.model import ACCOUNT_NOT_FOUND, FAILED, INSUFFICIENT_FUNDS, SUCCEEDED, PaymentDecision
from hsepay.relay.envelope import OutboxMessage
from hsepay.relay.inbound import HandlerMap, Message, Poison, Ready, decode

SETTINGS = Settings.from_env({})
ORDER, USER = uuid.uuid4(), uuid.uuid4()


def _handlers(service: str) -> HandlerMap:
    handlers = registry.get(service).handlers
    assert handlers is not None
    return handlers(SETTINGS)


CONSUMERS = {spec.name: _handlers(spec.name) for spec in registry.with_database()}


def _emitted() -> list[tuple[OutboxMessage, object]]:
    """(message, the typed event it must decode to): everything the producing code can write."""
    request = payment_requested(order_id=ORDER, user_id=USER, amount=250, topic="orders")
    emitted = [(request, OrderCreated(order_id=ORDER, user_id=USER, amount=250))]
    for status, reason in ((SUCCEEDED, None), (FAILED, INSUFFICIENT_FUNDS), (FAILED, ACCOUNT_NOT_FOUND)):
        decision = PaymentDecision(order_id=ORDER, user_id=USER, amount=250, status=status, reason=reason)
        message = payment_result(decision, topic="payment-status", causation_id=request.event_id)
        common = {"order_id": ORDER, "user_id": USER, "amount": 250}
        expected = PaymentSucceeded(**common) if reason is None else PaymentFailed(**common, reason=reason)
        emitted.append((message, expected))
    return emitted


def _received(message: OutboxMessage, value: bytes | None = None) -> Message:
    return Message(message.topic, 0, 0, message.key, message.value if value is None else value, message.headers)


def _consumer_of(event_type: str) -> HandlerMap:
    (handlers,) = [handlers for handlers in CONSUMERS.values() if event_type in handlers]
    return handlers


@pytest.mark.parametrize("message, expected", _emitted(), ids=lambda v: getattr(v, "event_type", None))
def test_every_emitted_event_decodes_as_itself_on_its_one_consumer(message, expected):
    item = decode(_received(message), _consumer_of(message.event_type))
    assert isinstance(item, Ready), item
    assert item.event.data == expected and type(item.event.data) is type(expected)
    assert item.event_id == message.event_id


def test_every_declared_event_is_emitted_and_consumed_and_nothing_else_is():
    emitted = {message.event_type for message, _ in _emitted()}
    consumed = {
        event_type: handler.schema for handlers in CONSUMERS.values() for event_type, handler in handlers.items()
    }
    assert emitted == {event.TYPE for event in EVENTS} == set(consumed)
    assert all(consumed[event.TYPE] is event for event in EVENTS)  # one declaration on both sides


def _with_envelope(message: OutboxMessage, **changes: object) -> bytes:
    envelope = msgspec.json.decode(message.value)
    for key, value in changes.items():
        if key == "data":
            envelope["data"].update(value)  # type: ignore[arg-type]
        else:
            envelope[key] = value
    return msgspec.json.encode(envelope)


@pytest.mark.parametrize("message, expected", _emitted(), ids=lambda v: getattr(v, "event_type", None))
def test_a_newer_version_is_quarantined_not_misread(message, expected):
    newer = _with_envelope(message, version=type(expected).VERSION + 1)
    item = decode(_received(message, newer), _consumer_of(message.event_type))
    assert isinstance(item, Poison) and item.event_id == message.event_id
    assert f"version {type(expected).VERSION + 1}" in item.error and "reads version 1" in item.error


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"amount": "250"}, "Expected `int`, got `str`"),
        ({"amount": 250.0}, "Expected `int`, got `float`"),
        ({"amount": True}, "Expected `int`, got `bool`"),
        ({"amount": 0}, "Expected `int` >= 1"),
        ({"user_id": "not-a-uuid"}, "Invalid UUID"),
    ],
)
def test_data_that_is_not_exactly_the_event_is_poison(data, problem):
    request = payment_requested(order_id=ORDER, user_id=USER, amount=250, topic="orders")
    item = decode(_received(request, _with_envelope(request, data=data)), CONSUMERS["payments"])
    assert isinstance(item, Poison) and item.event_id == request.event_id
    assert "invalid order.created data" in item.error and problem in item.error


def test_an_unknown_failure_reason_is_poison():
    decision = PaymentDecision(order_id=ORDER, user_id=USER, amount=250, status=FAILED, reason=INSUFFICIENT_FUNDS)
    message = payment_result(decision, topic="payment-status", causation_id=uuid.uuid4())
    item = decode(_received(message, _with_envelope(message, data={"reason": "card_expired"})), CONSUMERS["orders"])
    assert isinstance(item, Poison) and "invalid payment.failed data" in item.error
