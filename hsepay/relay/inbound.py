"""Inbound decoding: a Kafka record becomes a validated event for a handler, or poison with a reason.

Also the contract a service implements to receive events: an `EventHandler` per event type, whose
`apply` handles a batch of validated events inside the inbox transaction. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.relay.envelope import MalformedMessage, decode_envelope

__all__ = [
    "Consumed",
    "EventHandler",
    "HandlerMap",
    "Message",
    "Poison",
    "Ready",
    "Refused",
    "Verify",
    "decode",
    "first_of_each_event",
    "message_from_record",
    "storable_text",
]

T = TypeVar("T")

_SYNTHETIC_IDS = uuid.UUID("6f1c4a52-5a43-4d8e-9a64-1b9f4f0a7d21")


@dataclass(frozen=True, slots=True)
class Consumed(Generic[T]):
    """One consumed event whose `data` has been validated against its handler's schema."""

    event_id: uuid.UUID
    event_type: str
    data: T
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Refused:
    """An event its handler would not apply, because it contradicts the service's own facts (a
    payment result for another user or amount than its order): quarantined with `reason`."""

    event_id: uuid.UUID
    reason: str


@dataclass(frozen=True)
class EventHandler(Generic[T]):
    """`schema` validates an event's `data`, strictly (no coercion: "5" is not an amount); `apply`
    handles a batch of them in the inbox transaction and returns the events it refused (None or
    empty: it applied them all). The handler reads the version `schema.VERSION` of its event type
    (1 when the schema does not say); an event of any other version is poison."""

    schema: type[T]
    apply: Callable[[AsyncConnection, Sequence[Consumed[T]]], Awaitable[Sequence[Refused] | None]]

    @property
    def version(self) -> int:
        return getattr(self.schema, "VERSION", 1)


HandlerMap = Mapping[str, EventHandler[Any]]

Verify = Callable[["Message"], "str | None"]
"""A message's proof-of-origin check: None when authentic, else why it is refused."""


@dataclass(frozen=True, slots=True)
class Message:
    """The parts of a Kafka record the inbox keeps (also rebuilt from a quarantined row)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Ready:
    """A message that decoded and validated: its handler will apply it."""

    message: Message
    event: Consumed[Any]
    handler: EventHandler[Any]

    @property
    def event_id(self) -> uuid.UUID:
        return self.event.event_id

    @property
    def event_type(self) -> str:
        return self.event.event_type


@dataclass(frozen=True, slots=True)
class Poison:
    """A message that cannot be applied; it is quarantined with `error`, never dropped."""

    message: Message
    event_id: uuid.UUID
    event_type: str | None
    error: str


def storable_text(raw: bytes | str) -> str:
    """Text PostgreSQL can store: valid UTF-8 without NUL characters."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.replace("\x00", "\\0")


def message_from_record(record: Any) -> Message:
    """An aiokafka ConsumerRecord as a Message."""
    headers = {storable_text(name): storable_text(value or b"") for name, value in (record.headers or ())}
    key = storable_text(record.key) if record.key is not None else None
    return Message(record.topic, record.partition, record.offset, key, record.value, headers)


def decode(message: Message, handlers: HandlerMap, verify: Verify | None = None) -> Ready | Poison:
    """Validate a message against the envelope and its handler's schema, or say why it is poison.

    `verify` (hsepay.relay.signing) checks its proof of origin first: a refused message is poison
    under an id derived from its bytes, never the id it claims (a forgery must not pre-empt the
    real event of that id).
    """
    if verify is not None:
        refused = verify(message)
        if refused is not None:
            return Poison(message, _fallback_event_id(message), message.headers.get("event_type"), refused)
    try:
        envelope = decode_envelope(message.value)
    except MalformedMessage as exc:
        return Poison(message, _fallback_event_id(message), message.headers.get("event_type"), str(exc))
    handler = handlers.get(envelope.type)
    if handler is None:
        return Poison(message, envelope.event_id, envelope.type, f"no handler for event type {envelope.type!r}")
    if envelope.version != handler.version:
        why = f"{envelope.type} version {envelope.version}: this consumer reads version {handler.version}"
        return Poison(message, envelope.event_id, envelope.type, why)
    try:
        data = msgspec.convert(envelope.data, handler.schema, strict=True)
    except msgspec.ValidationError as exc:
        return Poison(message, envelope.event_id, envelope.type, f"invalid {envelope.type} data: {exc}")
    event = Consumed(
        event_id=envelope.event_id,
        event_type=envelope.type,
        data=data,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        headers=message.headers,
    )
    return Ready(message, event, handler)


def _fallback_event_id(message: Message) -> uuid.UUID:
    """An id for a message without a readable envelope, derived from where it sits and its bytes.

    Not its `event_id` header: a damaged copy quarantined under the real id would make the intact
    copy look like a duplicate. A redelivery of the same bytes gets the same id, so it is not
    quarantined twice.
    """
    digest = hashlib.sha256(message.value or b"").hexdigest()
    return uuid.uuid5(_SYNTHETIC_IDS, f"{message.topic}/{message.partition}/{message.offset}/{digest}")


def first_of_each_event(items: Sequence[Ready | Poison]) -> list[Ready | Poison]:
    """Drop later copies of an event within one batch (a redelivery inside the same fetch)."""
    seen: set[uuid.UUID] = set()
    unique = []
    for item in items:
        if item.event_id not in seen:
            seen.add(item.event_id)
            unique.append(item)
    return unique
