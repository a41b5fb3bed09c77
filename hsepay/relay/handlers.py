"""How a service plugs its event handlers into the generic inbox consumer."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Consumed", "EventHandler", "HandlerMap"]

T = TypeVar("T")


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


@dataclass(frozen=True)
class EventHandler(Generic[T]):
    """`schema` validates an event's `data`; `apply` handles a batch of them in the inbox transaction."""

    schema: type[T]
    apply: Callable[[AsyncConnection, Sequence[Consumed[T]]], Awaitable[None]]


HandlerMap = Mapping[str, EventHandler[Any]]
