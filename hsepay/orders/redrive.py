"""The re-drive, paced: stuck orders' payment requests are re-sent in waves, and a wave that gets no
answer makes the next one wait.

Re-sending recovers orders whose messages a broker lost; it does nothing for orders whose requests
sit unread on the topic (a stalled consumer) except add more of them. During one 5-minute stall the
unpaced re-drive sent 47,733 extra payment requests (issue 22). So: at most `batch` orders per wave;
the next wave as soon as any order of the last one settled (the pipeline answers, so the rest was
probably lost); otherwise only after a pause that doubles, from `older_than` up to `max_pause`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.orders.operations import any_settled, resend_stale_orders

__all__ = ["Redrive"]


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
        self.wave = await resend_stale_orders(conn, older_than=self.older_than, topic=self.topic, limit=self.batch)
        self.next_at = now + self.pause
        return len(self.wave)
