"""Fields that every log line of the current task carries: request id, event id, order id, trace id.

Context variables, so each asyncio task (an HTTP request, a consumer batch) has its own: the API
binds the request's fields, the inbox consumer binds each event's. Standard library only, so that
any module may bind fields without pulling in logging or metrics machinery.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from types import MappingProxyType

__all__ = ["bound", "current", "pop", "push", "saga_fields"]

_EMPTY: Mapping[str, str] = MappingProxyType({})
_fields: ContextVar[Mapping[str, str]] = ContextVar("hsepay_log_fields", default=_EMPTY)


def current() -> Mapping[str, str]:
    return _fields.get()


def push(**fields: str) -> Token:
    """`bound` without a context manager, for hot paths (the HTTP middleware); undo with `pop`."""
    return _fields.set({**_fields.get(), **fields})


def pop(token: Token) -> None:
    _fields.reset(token)


@contextlib.contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add `fields` (None values left out) to every log line written inside the block."""
    token = _fields.set({**_fields.get(), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


def saga_fields(headers: Mapping[str, str]) -> dict[str, str]:
    """The log fields of one saga event, from its Kafka headers (DESIGN §4).

    The correlation id of every saga event is its order id, so `order_id` is named as such too:
    a line about a payment decision and one about the order it settles can be found by one id.
    """
    fields = {
        name: headers[name] for name in ("event_id", "event_type", "correlation_id", "causation_id") if name in headers
    }
    if "correlation_id" in fields:
        fields["order_id"] = fields["correlation_id"]
    return fields
