"""The event envelope of DESIGN §4 and the outbox message that carries it to a topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from hsepay.relay import hooks

__all__ = ["Envelope", "MalformedMessage", "OutboxMessage", "decode_envelope", "new_message"]

ENVELOPE_VERSION = 1


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    event_id: uuid.UUID
    type: str
    version: int = ENVELOPE_VERSION
    """The version of the event type's `data`; a consumer reads the versions its handler declares."""
    occurred_at: datetime
    data: dict[str, Any]


class _Written(Envelope, frozen=True, kw_only=True):
    """An envelope being written: its `data` may be an event's Struct, encoded as the same object."""

    data: Any


class OutboxMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One row to write into a service's outbox: where it goes and the bytes it carries."""

    event_id: uuid.UUID
    topic: str
    key: str
    event_type: str
    value: bytes
    headers: dict[str, str]


class MalformedMessage(ValueError):
    """A consumed value is not a valid envelope."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def new_message(
    *,
    topic: str,
    key: str,
    event_type: str,
    data: msgspec.Struct | dict[str, Any],
    correlation_id: str,
    causation_id: str | None = None,
    version: int = ENVELOPE_VERSION,
) -> OutboxMessage:
    """Build an envelope and the Kafka headers of DESIGN §4 around `data` (`hsepay.events` builds the
    saga's messages through `outbox_message`, from typed events)."""
    envelope = _Written(
        event_id=uuid.uuid4(), type=event_type, version=version, occurred_at=datetime.now(UTC), data=data
    )
    headers = {
        "event_type": event_type,
        "event_id": str(envelope.event_id),
        "correlation_id": correlation_id,
    }
    if causation_id:
        headers["causation_id"] = causation_id
    if hooks.header_hooks:  # tracing on: the W3C traceparent of the message (DESIGN §4)
        headers.update(hooks.extra_headers(topic, causation_id))
    return OutboxMessage(
        event_id=envelope.event_id,
        topic=topic,
        key=key,
        event_type=event_type,
        value=_encoder.encode(envelope),
        headers=headers,
    )


def decode_envelope(value: bytes | None) -> Envelope:
    if not value:
        raise MalformedMessage("empty message value")
    try:
        envelope = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"not an event envelope: {exc}") from None
    return envelope
