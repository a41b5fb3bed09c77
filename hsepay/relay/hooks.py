"""Extension points through which tracing follows messages; relay/ calls them and imports nothing
that plugs into them (hsepay.observability.tracing registers itself here when tracing is on).

With no hook registered (the default) each call is a test of an empty list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

__all__ = ["BatchHook", "HeaderHook", "around_batch", "batch_hooks", "extra_headers", "header_hooks"]

HeaderHook = Callable[[str, str | None], Mapping[str, str]]
"""Extra headers for a new outbox message, given its topic and the id of the event that caused it (or None)."""

BatchHook = Callable[[str, Sequence[Any]], contextlib.AbstractContextManager[None]]
"""A scope around one inbox transaction of a consumer: its name and the messages it applies (each a
`hsepay.relay.inbound.Ready` or `Poison`, typed loosely: inbound imports envelope, which imports
this module, so even a type-only import of inbound here would close an import cycle)."""

header_hooks: list[HeaderHook] = []
batch_hooks: list[BatchHook] = []


def extra_headers(topic: str, causation_id: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for hook in header_hooks:
        headers.update(hook(topic, causation_id))
    return headers


@contextlib.contextmanager
def around_batch(consumer: str, items: Sequence[Any]) -> Iterator[None]:
    if not batch_hooks:
        yield
        return
    with contextlib.ExitStack() as stack:
        for hook in batch_hooks:
            stack.enter_context(hook(consumer, items))
        yield
