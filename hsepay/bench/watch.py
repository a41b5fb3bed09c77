"""How the latency scenario sees an order become final: as a client does, polling `GET /order/{id}`
(`HttpWatcher`), or from the orders database (`FinalPoller`), which spares the API that load."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping

import msgspec
import psycopg

from hsepay.bench.httpclient import Pool, encode_get

__all__ = ["HTTP_POLL_EVERY", "POLL_EVERY", "FinalPoller", "HttpWatcher"]

POLL_EVERY = 0.001
"""How often the database poller asks."""
HTTP_POLL_EVERY = 0.002
"""How often a client polls GET /order/{id}: a checkout page waiting for its payment."""


class FinalPoller:
    """Tells each waiter when its order was first seen final."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn
        self.waiting: dict[uuid.UUID, asyncio.Future] = {}
        self.task: asyncio.Task | None = None

    async def wait(self, order_id: uuid.UUID, user: uuid.UUID | None = None) -> float:
        future = asyncio.get_running_loop().create_future()
        self.waiting[order_id] = future
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._poll())
        return await future

    async def _poll(self) -> None:
        while self.waiting:
            rows = await self.conn.execute(
                "SELECT id FROM orders WHERE id = ANY(%s) AND status <> 'created'", (list(self.waiting),), prepare=True
            )
            seen = time.perf_counter()
            for (order_id,) in await rows.fetchall():
                future = self.waiting.pop(order_id, None)
                if future is not None and not future.done():
                    future.set_result(seen)
            await asyncio.sleep(POLL_EVERY)


class HttpWatcher:
    """Tells each waiter when a `GET /order/{id}` first answered a final status, polling every
    `every` seconds after each answer, as a checkout page does; counts the GETs."""

    def __init__(self, pool: Pool, every: float, headers: Callable[[uuid.UUID], Mapping[str, str]]) -> None:
        self.pool, self.every, self.headers = pool, every, headers
        self.gets = 0
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []

    async def wait(self, order_id: uuid.UUID, user: uuid.UUID) -> float:
        request = encode_get(self.pool.endpoint, f"/order/{order_id}", self.headers(user))
        while True:
            status, body = await self.pool.request(request)
            seen = time.perf_counter()
            self.gets += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 200 and msgspec.json.decode(body)["status"] != "created":
                return seen
            if status != 200 and len(self.errors) < 5:
                self.errors.append(f"GET /order/{order_id} answered {status}: {body[:200]!r}")
            await asyncio.sleep(self.every)
