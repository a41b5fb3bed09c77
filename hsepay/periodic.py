"""Background jobs, declared one way: a `Periodic` is a named step run every `interval` seconds.

The relay's purge of sent outbox rows, the consumer's purge of old inbox rows, the API's purge of
expired Idempotency-Keys and the orders re-drive are each a `Periodic`, and `run_periodic` runs
them all: the first step at once, then one every interval; a failure is logged and retried after a
backoff like every other loop of hsepay (`resilience.supervise`), and a stop ends the wait at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["Periodic", "in_transaction", "run_periodic"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Periodic:
    name: str
    """Names the job in logs, e.g. "orders re-drive"."""
    interval: float
    """Seconds from the end of one step to the start of the next."""
    step: Callable[[], Awaitable[int]]
    """One round of work; returns how many things it did (rows purged, orders re-sent)."""
    report: str
    """Logged, with the count for its %d, after a step that did something."""
    level: int = logging.INFO
    counter: str | None = None
    """The counter of `hsepay.observability.catalog.LIVE` that adds up the counts, if any."""


def in_transaction(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[int]]
) -> Callable[[], Awaitable[int]]:
    """A step that runs `work` in a transaction of its own on `engine`."""

    async def step() -> int:
        async with engine.begin() as conn:
            return await work(conn)

    return step


async def run_periodic(
    job: Periodic,
    stop: asyncio.Event,
    *,
    max_backoff: float = 10.0,
    counted: Callable[[int], None] | None = None,
) -> None:
    """Run `job` until `stop` is set; `counted` is told each non-zero count (for /metrics)."""
    from hsepay.resilience import Backoff, run_periodically

    async def step() -> None:
        count = await job.step()
        if count:
            log.log(job.level, "%s: " + job.report, job.name, count)
            if counted is not None:
                counted(count)

    await run_periodically(job.name, step, stop, job.interval, Backoff(max_backoff))
