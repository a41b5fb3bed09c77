"""What a process runs, as seen by /metrics and /health/ready: one registry of sources per process.

A source is one thing a process runs or depends on (a service database, the broker, a relay, a
consumer). It gives samples for /metrics, read from its stats or refreshed from the database at
scrape time (bounded and cached), and a readiness answer for /health/ready. Every HTTP endpoint of
a process (an API port, a worker's --metrics-port) reports every source of that process, so
`hsepay up` is ready only when its APIs, relays and consumers all are.

Standard library only: prometheus_client is imported by `metrics`, at exposition time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Readiness", "Sample", "Source", "active", "check_ready", "refresh_all", "watching"]

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    family: str
    """A name of `hsepay.observability.catalog.LIVE`."""
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class Readiness:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    key: tuple[str, ...]
    """Unique per process: two sources with one key (an API and a relay on the same database) are one."""

    def samples(self) -> Iterable[Sample]: ...

    async def refresh(self) -> None:
        """Update what `samples` reads (a database query); bounded in time, may be cached."""

    async def ready(self) -> Readiness: ...


_sources: dict[tuple[str, ...], tuple[Source, int]] = {}


def active() -> list[Source]:
    return [source for source, _ in _sources.values()]


@contextlib.contextmanager
def watching(sources: Iterable[Source]) -> Iterator[None]:
    """Register `sources` for this process while the block runs."""
    keys = []
    for source in sources:
        held, count = _sources.get(source.key, (source, 0))
        _sources[source.key] = (held, count + 1)
        keys.append(source.key)
    try:
        yield
    finally:
        for key in keys:
            held, count = _sources[key]
            if count <= 1:
                del _sources[key]
            else:
                _sources[key] = (held, count - 1)


async def refresh_all() -> None:
    sources = active()
    if sources:
        await asyncio.gather(*(source.refresh() for source in sources), return_exceptions=True)


async def check_ready() -> tuple[bool, dict[str, Any]]:
    """(every source ready?, each source's answer by name); a source that does not answer in time is not ready."""
    sources = active()
    if not sources:
        return False, {"process": {"ready": False, "error": "starting: nothing registered yet"}}

    async def one(source: Source) -> Readiness:
        try:
            return await asyncio.wait_for(source.ready(), timeout=READY_TIMEOUT)
        except TimeoutError:
            return Readiness(False, {"error": f"no answer within {READY_TIMEOUT:g}s"})
        except Exception as exc:  # a failed check is "not ready", with the reason
            return Readiness(False, {"error": f"{type(exc).__name__}: {exc}"})

    answers = await asyncio.gather(*(one(source) for source in sources))
    report: dict[str, Any] = {}
    for source, answer in zip(sources, answers, strict=True):
        report[".".join(source.key)] = {"ready": answer.ok, **answer.detail}
    return all(answer.ok for answer in answers), report


class Cached:
    """A value refreshed at most every `ttl` seconds, by one caller at a time."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.at = -float("inf")
        self._lock = asyncio.Lock()

    def fresh(self) -> bool:
        return time.monotonic() - self.at < self.ttl

    @contextlib.asynccontextmanager
    async def updating(self):
        """Yields True when the caller should refresh (the others wait, then see it fresh)."""
        if self.fresh():
            yield False
            return
        async with self._lock:
            if self.fresh():
                yield False
                return
            try:
                yield True
            finally:
                self.at = time.monotonic()
