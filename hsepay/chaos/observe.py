"""Watching a chaos run: how many orders are stuck, sampled, and when orders settle again after a fault."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.orders.tables import orders as orders_table
from hsepay.resilience import is_unavailable

__all__ = ["STUCK_AFTER", "Sampler"]

STUCK_AFTER = 1.0
"""An order still `created` this many seconds after its creation counts as stuck."""
SAMPLE_EVERY = 0.25


class Sampler:
    """Counts stuck orders every SAMPLE_EVERY seconds (None while the database cannot be asked)."""

    def __init__(self, orders: AsyncEngine) -> None:
        self.orders = orders
        self.samples: list[tuple[float, int | None]] = []

    async def run(self, stop: asyncio.Event) -> None:
        query = select(func.count()).where(
            orders_table.c.status == "created",
            orders_table.c.created_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, STUCK_AFTER),
        )
        while not stop.is_set():
            try:
                async with self.orders.connect() as conn:
                    stuck = (await conn.execute(query)).scalar_one()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                stuck = None
            self.samples.append((time.time(), stuck))
            await asyncio.sleep(SAMPLE_EVERY)

    def recovered_at(self, since: float, until: float) -> float | None:
        """When orders settled again after `since`: the first clean sample after the last stall
        that began before `until`. `since` itself when no stall was seen."""
        stalled = False
        for at, stuck in self.samples:
            if at < since:
                continue
            if stuck is None or stuck > 0:
                if at < until:
                    stalled = True
                continue
            if stalled:
                return at
            if at >= until:
                return since
        return None
