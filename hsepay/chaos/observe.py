"""Watching a chaos run: how many orders are stuck, sampled, and when orders settle again after a fault."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.orders.tables import orders as orders_table
from hsepay.resilience import is_unavailable

__all__ = ["STUCK_AFTER", "Sampler", "unavailable_window"]

STUCK_AFTER = 1.0
"""An order still `created` this many seconds after its creation counts as stuck."""
SAMPLE_EVERY = 0.25


class Sampler:
    """Counts stuck orders, and when the oldest of them was created, every SAMPLE_EVERY seconds
    (None while the database cannot be asked)."""

    def __init__(self, orders: AsyncEngine) -> None:
        self.orders = orders
        self.samples: list[tuple[float, int | None, float | None]] = []
        """(when, stuck orders, creation time of the oldest of them)."""
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Sampler]:
        """Sample in the background for the block; stopped however the block ends (a run that failed
        must not leave its sampler polling a database that is dropped next)."""
        self._task = asyncio.create_task(self.run(self._stop))
        try:
            yield self
        finally:
            await self.stop()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        query = select(func.count(), func.extract("epoch", func.min(orders_table.c.created_at))).where(
            orders_table.c.status == "created",
            orders_table.c.created_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, STUCK_AFTER),
        )
        while not stop.is_set():
            try:
                async with self.orders.connect() as conn:
                    stuck, oldest = (await conn.execute(query)).one()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                stuck, oldest = None, None
            self.samples.append((time.time(), stuck, float(oldest) if oldest is not None else None))
            await asyncio.sleep(SAMPLE_EVERY)

    def recovered_at(self, since: float, until: float, returned: float | None = None) -> float | None:
        """When orders settled again after `since`: the first clean sample after the last stall
        that began before `until`. `since` itself when no stall was seen. With `returned` (when the
        broken part was back), a sample is also clean once every order still stuck was created
        after that: the fault's backlog is gone, and what is left is the flow of new orders (on a
        loaded box, the retries that pile up during a 30 s cut keep some order older than
        STUCK_AFTER unsettled for a while, each of them settling in under 2.5 s)."""
        stalled = False
        for at, stuck, oldest in self.samples:
            if at < since:
                continue
            backlog_gone = returned is not None and oldest is not None and oldest >= returned
            if stuck is None or (stuck > 0 and not backlog_gone):
                if at < until:
                    stalled = True
                continue
            if stalled:
                return at
            if at >= until:
                return since
        return None


def unavailable_window(answers: list[tuple[float, float]], since: float, until: float) -> dict[str, float] | None:
    """The 503s of requests sent in [since, until): from the first to the last answer (seconds), how
    many, and the slowest (a 503 must come fast: the API never waits out a missing primary)."""
    inside = [(sent, took) for sent, took in answers if since <= sent < until]
    if not inside:
        return None
    first = min(sent for sent, _ in inside)
    last = max(sent + took for sent, took in inside)
    return {
        "seconds": round(last - first, 2),
        "from_s": round(first - since, 2),
        "answers": len(inside),
        "slowest_s": round(max(took for _, took in inside), 3),
    }
