"""Group read: concurrent lookups by key share one query, each caller getting its own row.

The read twin of `hsepay.batching.GroupCommit`, for the hottest read of the API (a checkout page
polls `GET /order/{id}` every few milliseconds). Measured on the 2-core box (docs/BENCHMARKS.md):
one lookup through a pooled SQLAlchemy connection cost ~1.2 ms of the API's CPU per request, most of
it the pool checkout, the statement's compilation, a BEGIN and the ROLLBACK that returns the
connection. Here lookups that arrive while a query is running wait for the next one, which fetches
them all with one prepared statement (`= ANY($1)`) on a connection held in autocommit mode (no
BEGIN, no ROLLBACK, no checkout per query). Nothing waits on a timer: a lone lookup goes at once.

A query that fails fails its batch alone (the error reaches each caller, which the API answers 503
for an unavailable database); its connection is closed and the next batch opens another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["GroupRead"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[Any, Sequence[K]], Awaitable[Mapping[K, V]]]
"""Looks up keys on a psycopg AsyncConnection (autocommit); returns the rows found by key."""


class GroupRead(Generic[K, V]):
    """Runs `fetch` over batches of requested keys, on at most `connections` held connections."""

    def __init__(self, engine: AsyncEngine, fetch: Fetch, *, max_batch: int = 256, connections: int = 2) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.fetch = fetch
        self.max_batch = max_batch
        self.connections = connections
        self._queue: list[tuple[K, asyncio.Future]] = []
        self._idle: list[AsyncConnection] = []
        self._running = 0
        """Runners between their start and the moment they see the queue empty. Counted by the
        runner itself, not by its task's done-callback, which runs a loop turn later: a lookup
        queued in that turn would otherwise find no runner and wait forever."""
        self._runners: set[asyncio.Task] = set()
        self._closed = False
        self.batches = 0
        self.items = 0

    async def get(self, key: K) -> V | None:
        """The row of `key`, or None if there is none."""
        if self._closed:
            raise RuntimeError("the group read is closed")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((key, future))
        if self._running < self.connections:
            self._running += 1
            runner = asyncio.create_task(self._drain())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        return await future

    async def _drain(self) -> None:
        conn: AsyncConnection | None = None
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    if conn is None:
                        conn = self._idle.pop() if self._idle else await self.engine.connect()
                    driver = (await conn.get_raw_connection()).driver_connection
                    found = await self.fetch(driver, [key for key, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if conn is not None:
                        await _discard(conn)
                        conn = None
                    continue
                self.batches += 1
                self.items += len(batch)
                for key, future in batch:
                    if not future.done():  # a caller that went away (cancelled) wants nothing
                        future.set_result(found.get(key))
        finally:
            self._running -= 1  # with no await since the queue was seen empty
            if conn is not None:
                if self._closed:
                    with contextlib.suppress(Exception):
                        await conn.close()
                else:
                    self._idle.append(conn)

    async def close(self) -> None:
        """Let the queries in flight finish, then return the held connections (on shutdown)."""
        self._closed = True
        while self._runners:
            await asyncio.gather(*list(self._runners), return_exceptions=True)
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()


async def _discard(conn: AsyncConnection) -> None:
    """Close a held connection for good: its driver connection may be broken (the query ran on it
    directly, so SQLAlchemy's pool cannot know), so it is invalidated rather than pooled again."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
