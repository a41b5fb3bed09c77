"""Group commit: concurrent requests share one database transaction, each keeping its own result.

Measured on this 2-core box (docs/BENCHMARKS.md): writing an order costs ~1.5 ms of Python and
5 round trips in a transaction of its own, ~0.06 ms of psycopg time per order when 64 requests
share one multi-row transaction. So requests that arrive while a transaction is running are queued,
and the next transaction takes them all (up to `max_batch`). A batch that fails for a reason
other than the database being unavailable is retried one item at a time, so that one bad item
fails alone; an unavailable database fails every item of the batch with that error (503).
Nothing waits on a timer: a lone request goes at once.

Every item has a deadline, `timeout` seconds after it was submitted, and is answered by then
whatever the database does; what it is told is true (issue 22: an order answered 503 was still
created once the database came back, 16,464 times out of 16,465):
- still queued at its deadline, or its batch could not get a connection in time: not applied;
- its batch's statements cut at the deadline before the COMMIT was sent: not applied (a
  transaction never commits without its COMMIT; the dropped connection rolls it back);
- its request withdrawn (cancelled) before the COMMIT: the batch rolls back, the other items go
  into the next one;
- the COMMIT sent but not confirmed: `OutcomeUnknown` — the answer says the effect may have been
  applied, and a retry with the same Idempotency-Key replays the truth (the key's row is written
  in the same transaction, so it committed exactly when the order did).
The queue is bounded: past `max_queue` waiting items a request is refused at once (`Overloaded`),
and while the database is known to be silent (`BoundedDatabase`'s breaker) nothing waits at all.

A batch that `apply` writes with one statement (`single_statement` says which) runs in autocommit:
PostgreSQL makes one statement atomic by itself, so BEGIN and COMMIT would be two more round trips
for nothing (a lone order: 4 round trips → 1). That statement is its own COMMIT: one that got no
answer is `OutcomeUnknown` like an unconfirmed COMMIT, and the requests withdrawn before it is sent
go into the next batch; one withdrawn while it runs cannot be rolled back, but its client is given
no answer, so no 5xx is ever followed by the effect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.bounded_db import BoundedDatabase
from hsepay.connections import commit_or_unknown, no_answer
from hsepay.resilience import OutcomeUnknown, Overloaded, Unavailable, describe, is_unavailable

__all__ = ["GroupCommit"]

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchFunction = Callable[[AsyncConnection, Sequence[Item]], Awaitable[list[Result | BaseException]]]
"""Applies a batch in the caller's transaction: one result per item, or the exception for that
item (a refusal that does not spoil the others, e.g. an idempotency key reused)."""


@dataclass(eq=False)
class _Waiting(Generic[Item, Result]):
    item: Item
    future: asyncio.Future
    deadline: float
    """Event loop time by which the item is answered."""
    expiry: asyncio.TimerHandle | None = None
    """Answers the item 'not applied' at its deadline while it is still queued."""


class _Withdrawn(Exception):
    """Some waiters went away before the COMMIT: the transaction was rolled back."""

    def __init__(self, survivors: list[_Waiting]) -> None:
        self.survivors = survivors


class GroupCommit(Generic[Item, Result]):
    """Runs `apply` over batches of submitted items, at most `in_flight` transactions at a time."""

    def __init__(
        self,
        db: BoundedDatabase,
        apply: BatchFunction,
        *,
        max_batch: int = 256,
        in_flight: int = 2,
        timeout: float = 1.5,
        max_queue: int = 1024,
        separate: Callable[[Sequence[Item]], tuple[list[int], list[int]]] | None = None,
        single_statement: Callable[[Sequence[Item]], bool] | None = None,
    ) -> None:
        self.db = db
        self.apply = apply
        self.max_batch = max_batch
        self.timeout = timeout
        self.max_queue = max_queue
        self.separate = separate
        self.single_statement = single_statement
        """Whether `apply` writes a batch with exactly one statement (then no transaction is opened)."""
        self._queue: list[_Waiting] = []
        self._slots = asyncio.Semaphore(in_flight)
        self._tasks: set[asyncio.Task] = set()
        self.batches = 0
        self.items = 0
        self.refused = 0
        self.expired = 0
        self.unconfirmed = 0
        self.last_success: float | None = None
        self.last_unavailable: float | None = None
        """Event loop times of the last batch that committed, and of the last one the database failed."""

    async def submit(self, item: Item) -> Result:
        """Apply `item` in a shared transaction; its own result, or its own exception, by its deadline."""
        self.db.check()  # a database known to be silent: 503 at once, not after a wait in line
        if len(self._queue) >= self.max_queue:
            self._queue = [w for w in self._queue if not w.future.done()]
            if len(self._queue) >= self.max_queue:
                self.refused += 1
                raise Overloaded(f"{len(self._queue)} requests already wait for the database; retry later")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(item, loop.create_future(), loop.time() + self.timeout)
        waiting.expiry = loop.call_at(waiting.deadline, self._expire, waiting)
        self._queue.append(waiting)
        if len(self._queue) == 1:
            self._spawn()
        return await waiting.future

    def failing(self) -> bool:
        """The last batch the database decided failed it (unavailable), and none committed since."""
        return self.last_unavailable is not None and (
            self.last_success is None or self.last_success < self.last_unavailable
        )

    def _expire(self, waiting: _Waiting) -> None:
        if not waiting.future.done():
            self.expired += 1
            waiting.future.set_exception(
                Unavailable(f"the database did not take the request within {self.timeout:g}s; nothing was applied")
            )

    def _spawn(self) -> None:
        task = asyncio.create_task(self._run_next())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_next(self) -> None:
        async with self._slots:
            batch = self._take()
            if self._queue:
                self._spawn()  # the rest goes in the next transaction, as soon as a slot frees
            if batch:
                await self._commit(batch)

    def _take(self) -> list[_Waiting]:
        """The next batch: live items only (an expired or cancelled one is answered already)."""
        live = [w for w in self._queue if not w.future.done()]
        batch, self._queue = live[: self.max_batch], live[self.max_batch :]
        if self.separate is not None:
            now, later = self.separate([w.item for w in batch])
            self._queue[:0] = [batch[i] for i in later]
            batch = [batch[i] for i in now]
        for waiting in batch:
            if waiting.expiry is not None:
                waiting.expiry.cancel()  # from now on the transaction answers it, knowing what it sent
        return batch

    def _requeue(self, waiting: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        for w in waiting:
            w.expiry = loop.call_at(w.deadline, self._expire, w)
        was_empty = not self._queue
        self._queue[:0] = waiting
        if was_empty and self._queue:
            self._spawn()

    async def _commit(self, batch: list[_Waiting]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._transaction(batch)
        except _Withdrawn as withdrawn:
            self._requeue(withdrawn.survivors)
            return
        except Exception as exc:
            if isinstance(exc, OutcomeUnknown) or is_unavailable(exc) or len(batch) == 1:
                self._note_failure(exc)
                for waiting in batch:
                    _settle(waiting.future, exc)
                return
            log.warning("a batch of %d failed (%r); applying its items one by one", len(batch), exc)
            for waiting in batch:
                await self._alone(waiting)
            return
        for waiting, result in zip(batch, results, strict=True):
            _settle(waiting.future, result)

    async def _alone(self, waiting: _Waiting) -> None:
        try:
            (result,) = await self._transaction([waiting])
        except _Withdrawn:
            return  # its request went away; nothing was applied
        except Exception as exc:
            self._note_failure(exc)
            result = exc
        _settle(waiting.future, result)

    def _note_failure(self, exc: BaseException) -> None:
        if is_unavailable(exc):
            self.last_unavailable = asyncio.get_running_loop().time()

    async def _transaction(self, batch: list[_Waiting]) -> list[Result | BaseException]:
        """One transaction over the batch, over by the earliest deadline in it (see the module docstring)."""
        deadline = min(w.deadline for w in batch)
        items = [w.item for w in batch]
        if self.single_statement is not None and self.single_statement(items):
            return await self._one_statement(batch, items, deadline)
        async with self.db.unit(deadline) as conn:
            transaction = await conn.begin()
            results = await self.apply(conn, [w.item for w in batch])
            if any(w.future.done() for w in batch):
                await transaction.rollback()
                raise _Withdrawn([w for w in batch if not w.future.done()])
            try:
                await commit_or_unknown(transaction)
            except OutcomeUnknown as exc:
                self.unconfirmed += len(batch)
                log.warning("the COMMIT of a batch of %d was not confirmed: %s", len(batch), describe(exc.__cause__))
                raise
        self.last_success = asyncio.get_running_loop().time()
        return results

    async def _one_statement(
        self, batch: list[_Waiting], items: list[Item], deadline: float
    ) -> list[Result | BaseException]:
        """The batch as one statement in autocommit (see the module docstring)."""
        if any(w.future.done() for w in batch):
            raise _Withdrawn([w for w in batch if not w.future.done()])  # nothing sent yet
        async with self.db.unit(deadline) as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")  # reset when the pool takes it back
            try:
                results = await self.apply(conn, items)
            except Exception as exc:
                if not no_answer(exc):
                    raise
                self.unconfirmed += len(batch)
                log.warning("a one-statement batch of %d got no answer: %s", len(batch), describe(exc))
                raise OutcomeUnknown(
                    "the database did not confirm the write: the request may have taken effect; "
                    "retry with the same Idempotency-Key to learn its outcome"
                ) from exc
        self.last_success = asyncio.get_running_loop().time()
        return results

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
