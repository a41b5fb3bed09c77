"""Group commit: concurrent requests share one database transaction, each keeping its own result.

Measured on this 2-core box (docs/BENCHMARKS.md): writing an order costs ~1.5 ms of Python and
5 round trips in a transaction of its own, ~0.06 ms of psycopg time per order when 64 requests
share one multi-row transaction. So requests that arrive while a transaction is running are queued,
and the next transaction takes them all (up to `max_batch`). A batch that fails for a reason
other than the database being unavailable is retried one item at a time, so that one bad item
fails alone; an unavailable database fails every item of the batch with that error (503).
Nothing waits on a timer: a lone request goes at once.

A batch that `apply` writes with one statement (`single_statement` says which) runs in autocommit:
PostgreSQL makes one statement atomic by itself, so BEGIN and COMMIT would be two more round trips
for nothing (a lone order: 4 round trips → 1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay.resilience import is_unavailable

__all__ = ["GroupCommit"]

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchFunction = Callable[[AsyncConnection, Sequence[Item]], Awaitable[list[Result | BaseException]]]
"""Applies a batch in the caller's transaction: one result per item, or the exception for that
item (a refusal that does not spoil the others, e.g. an idempotency key reused)."""


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    future: asyncio.Future


class GroupCommit(Generic[Item, Result]):
    """Runs `apply` over batches of submitted items, at most `in_flight` transactions at a time."""

    def __init__(
        self,
        engine: AsyncEngine,
        apply: BatchFunction,
        *,
        max_batch: int = 256,
        in_flight: int = 2,
        separate: Callable[[Sequence[Item]], tuple[list[int], list[int]]] | None = None,
        single_statement: Callable[[Sequence[Item]], bool] | None = None,
    ) -> None:
        self.engine = engine
        self.apply = apply
        self.max_batch = max_batch
        self.separate = separate
        self.single_statement = single_statement
        """Whether `apply` writes a batch with exactly one statement (then no transaction is opened)."""
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT") if single_statement else None
        self._queue: list[_Waiting] = []
        self._slots = asyncio.Semaphore(in_flight)
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        """Apply `item` in a shared transaction; its own result, or its own exception."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(item, future))
        if len(self._queue) == 1:
            self._spawn()
        return await future

    def _spawn(self) -> None:
        task = asyncio.create_task(self._run_next())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_next(self) -> None:
        async with self._slots:
            if not self._queue:
                return
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            if self.separate is not None:
                now, later = self.separate([w.item for w in batch])
                self._queue[:0] = [batch[i] for i in later]
                batch = [batch[i] for i in now]
            if self._queue:
                self._spawn()  # the rest goes in the next transaction, as soon as a slot frees
            await self._commit(batch)

    async def _commit(self, batch: list[_Waiting]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._transaction([w.item for w in batch])
        except Exception as exc:
            if is_unavailable(exc) or len(batch) == 1:
                for waiting in batch:
                    _settle(waiting.future, exc)
                return
            log.warning("a batch of %d failed (%r); applying its items one by one", len(batch), exc)
            for waiting in batch:
                try:
                    (result,) = await self._transaction([waiting.item])
                except Exception as alone:
                    result = alone
                _settle(waiting.future, result)
            return
        for waiting, result in zip(batch, results, strict=True):
            _settle(waiting.future, result)

    async def _transaction(self, items: Sequence[Item]) -> list[Result | BaseException]:
        if self._autocommit is not None and self.single_statement(items):
            async with self._autocommit.connect() as conn:
                return await self.apply(conn, items)
        async with self.engine.begin() as conn:
            return await self.apply(conn, items)

    async def close(self) -> None:
        """Wait for the transactions in flight (on shutdown, after the server stopped taking requests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _settle(future: asyncio.Future, result: object) -> None:
    if future.done():
        return  # the request was cancelled (the client went away); its effect still committed
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
