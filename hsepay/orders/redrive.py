"""The re-drive, paced: stuck orders' payment requests are re-sent in waves, and a wave that gets no
answer makes the next one wait.

Re-sending recovers orders whose messages a broker lost; it does nothing for orders whose requests
sit unread on the topic (a stalled consumer) except add more of them. During one 5-minute stall the
unpaced re-drive sent 47,733 extra payment requests (issue 22). So: at most `batch` orders per wave;
the next wave as soon as any order of the last one settled (the pipeline answers, so the rest was
probably lost); otherwise only after a pause that doubles, from `older_than` up to `max_pause`.

And an order is stale only against the flow of the moment: if orders are taking long to settle
(a busy box, a consumer catching up), the threshold is `SLOW_FACTOR` times their 99th percentile,
when that is more than `older_than`. In a soak at load 20-40 orders took 8 s (median) to 43 s (p99)
to settle after a PostgreSQL restart, and a fixed 5 s threshold re-sent 10,000 requests in 20
minutes, each of them more work for the consumers that were behind.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.orders.operations import any_settled, recent_settle_time, resend_stale_orders

__all__ = ["SLOW_FACTOR", "Redrive"]

SLOW_FACTOR = 3.0
FLOW_WINDOW = 60.0
"""Seconds of recent orders whose settle times say how fast the flow is."""


class Redrive:
    """One process's re-drive state; `step` runs in the caller's transaction."""

    def __init__(
        self,
        *,
        older_than: float,
        topic: str,
        batch: int = 1000,
        max_pause: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.older_than = older_than
        self.topic = topic
        self.batch = batch
        self.max_pause = max(max_pause, older_than)
        self.clock = clock
        self.wave: list[uuid.UUID] = []
        self.pause = older_than
        self.next_at = 0.0
        self.held = 0
        """Scans that re-sent nothing because the last wave was not answered yet."""
        self.threshold = older_than
        """The age at which an order counted as stale in the last scan (see `stale_after`)."""

    async def step(self, conn: AsyncConnection) -> int:
        """Re-send the next wave if it is due; the number of orders re-sent."""
        now = self.clock()
        if self.wave:
            if await any_settled(conn, self.wave):
                self.pause = self.older_than
            elif now < self.next_at:
                self.held += 1
                return 0
            else:
                self.pause = min(self.pause * 2, self.max_pause)
        self.threshold = await self.stale_after(conn)
        self.wave = await resend_stale_orders(conn, older_than=self.threshold, topic=self.topic, limit=self.batch)
        self.next_at = now + self.pause
        return len(self.wave)

    async def stale_after(self, conn: AsyncConnection) -> float:
        """`older_than`, or `SLOW_FACTOR` × the recent 99th percentile of settle times if more."""
        flow = await recent_settle_time(conn, window=max(FLOW_WINDOW, self.older_than))
        return max(self.older_than, SLOW_FACTOR * flow) if flow is not None else self.older_than
