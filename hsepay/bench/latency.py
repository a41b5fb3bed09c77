"""Latency: orders sent one by one over HTTP at a steady rate, each timed from its POST to its final status.

Orders are sent on a fixed schedule (open loop: a slow answer does not delay the next order, so a
stall shows up in the figures instead of hiding in fewer samples). The final status is seen by a
poller that asks the orders database every millisecond for the orders in flight (one primary-key
query for all of them, on a connection of its own). The same orders are also timed on the
database's clock, created_at → updated_at: the saga alone, without HTTP and without the poller.

On a fresh stack the first order is timed on its own first: DESIGN §9's "first order after ready".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from sqlalchemy import func, select

from hsepay.bench.httpclient import Endpoint, Pool, encode_post
from hsepay.bench.results import Chart, Context, Verdict, per_unit_ms
from hsepay.bench.session import SagaSession
from hsepay.bench.stats import Histogram
from hsepay.bench.usage import Phase, measure
from hsepay.orders.tables import orders
from hsepay.relay.leadership import libpq_conninfo

__all__ = ["LatencyResult", "latency"]

POLL_EVERY = 0.001


@dataclass
class LatencyResult:
    context: Context
    rate: float
    end_to_end: Histogram
    """POST sent → final status seen by the bench's poller (every millisecond)."""
    accepted: Histogram
    """POST sent → 202 received."""
    saga: Histogram
    """The database's clock: the order's created_at → updated_at (no HTTP, no poller)."""
    first_order_ms: float | None
    ready_s: float | None
    late: int
    """Orders not final within the timeout (a failure)."""
    points: list[tuple[float, float]]
    """(seconds since the first POST, end-to-end ms) per order."""
    phase: Phase
    verdict: Verdict
    statuses: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": "latency",
            "ok": self.verdict.ok,
            "rate_per_s": self.rate,
            "samples": self.end_to_end.count,
            "first_order_ms": self.first_order_ms,
            "ready_s": None if self.ready_s is None else round(self.ready_s, 2),
            "end_to_end": self.end_to_end.summary_ms(),
            "accepted": self.accepted.summary_ms(),
            "saga_db_clock": self.saga.summary_ms(),
            "late": self.late,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "processes": self.phase.to_json(),
            "cpu_ms_per_order": per_unit_ms(self.phase, self.end_to_end.count),
            "points": [list(point) for point in self.points],
            "verdict": self.verdict.to_json(),
            "context": self.context.to_json(),
        }

    def table_rows(self) -> list[tuple[str, Any]]:
        e2e, acc, saga = self.end_to_end.summary_ms(), self.accepted.summary_ms(), self.saga.summary_ms()
        return [
            ("first order after ready: POST → final", f"{self.first_order_ms} ms"),
            ("roles started → all ready", f"{self.ready_s:.2f} s" if self.ready_s is not None else "-"),
            ("orders timed, at", f"{e2e['count']:,} at {self.rate:g}/s"),
            ("POST → final p50 / p99 / max", f"{e2e['p50_ms']} / {e2e['p99_ms']} / {e2e['max_ms']} ms"),
            ("POST → 202 p50 / p99", f"{acc['p50_ms']} / {acc['p99_ms']} ms"),
            ("created_at → updated_at (database clock) p50 / p99", f"{saga['p50_ms']} / {saga['p99_ms']} ms"),
            ("not final in time", self.late),
        ]

    def charts(self) -> list[Chart]:
        return [
            Chart("histogram", "Creation → final status (POST sent → final seen)", histogram=self.end_to_end),
            Chart(
                "series",
                "Each order's latency over the run",
                series={"POST → final (ms)": self.points},
                y_label="ms",
            ),
        ]

    def processes(self) -> tuple[Phase, int, str]:
        return self.phase, self.end_to_end.count, "order"


class FinalPoller:
    """Tells each waiter when its order was first seen final."""

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        self.conn = conn
        self.waiting: dict[uuid.UUID, asyncio.Future] = {}
        self.task: asyncio.Task | None = None

    async def wait(self, order_id: uuid.UUID) -> float:
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


class _Timer:
    def __init__(self, session: SagaSession, pool: Pool, poller: FinalPoller, endpoint: Endpoint, timeout: float):
        self.session, self.pool, self.poller, self.endpoint, self.timeout = session, pool, poller, endpoint, timeout
        self.end_to_end, self.accepted = Histogram(), Histogram()
        self.ids: list[uuid.UUID] = []
        self.points: list[tuple[float, float]] = []
        self.statuses: dict[int, int] = {}
        self.late = 0
        self.errors: list[str] = []

    async def one(self, user: uuid.UUID, origin: float) -> float | None:
        """POST one order and wait for its final status; seconds it took (None if it failed)."""
        body = msgspec.json.encode({"user_id": str(user), "amount": 1, "description": "latency"})
        request = encode_post(self.endpoint, body, self.session.headers(user))
        sent = time.perf_counter()
        try:
            status, answer = await self.pool.request(request, timeout=self.timeout)
        except (OSError, TimeoutError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return None
        accepted = time.perf_counter()
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status != 202:
            self.errors.append(f"POST /orders answered {status}: {answer[:200]!r}")
            return None
        order_id = uuid.UUID(msgspec.json.decode(answer)["id"])
        self.ids.append(order_id)
        try:
            final = await asyncio.wait_for(self.poller.wait(order_id), self.timeout)
        except TimeoutError:
            self.late += 1
            self.poller.waiting.pop(order_id, None)
            return None
        took = final - sent
        self.accepted.record(accepted - sent)
        self.end_to_end.record(took)
        self.points.append((round(sent - origin, 3), round(took * 1000, 2)))
        return took


async def latency(session: SagaSession, *, samples: int, rate: float, users: int, timeout: float) -> LatencyResult:
    context = session.context("latency")
    people = await session.rich_users(users)
    endpoint = Endpoint(f"{session.orders_url}/orders")
    pool = Pool(endpoint)
    conninfo = libpq_conninfo(session.system["orders"].url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        timer = _Timer(session, pool, FinalPoller(conn), endpoint, timeout)
        first_ms = None
        if session.orders_placed == 0:
            first = await timer.one(people[0], time.perf_counter())
            first_ms = None if first is None else round(first * 1000, 1)
            timer.end_to_end, timer.accepted, timer.points, timer.statuses = Histogram(), Histogram(), [], {}
        with measure(session.tracked()) as phase:
            origin = time.perf_counter()
            tasks = []
            for i in range(samples):
                pause = origin + i / rate - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                tasks.append(asyncio.create_task(timer.one(people[i % len(people)], origin)))
            await asyncio.gather(*tasks)
    pool.close()
    session.orders_placed += len(timer.ids)
    saga = Histogram()
    async with session.system.engine("orders").connect() as conn:
        rows = await conn.execute(
            select(func.extract("epoch", orders.c.updated_at - orders.c.created_at)).where(
                orders.c.id.in_(timer.ids), orders.c.status != "created"
            )
        )
        for seconds in rows.scalars():
            saga.record(float(seconds))
    verdict = await session.verdict(
        settle_timeout=timeout,
        expect=[f"{timer.late} order(s) not final within {timeout:g}s"] * bool(timer.late) + timer.errors[:5],
    )
    context.finish()
    return LatencyResult(
        context=context,
        rate=rate,
        end_to_end=timer.end_to_end,
        accepted=timer.accepted,
        saga=saga,
        first_order_ms=first_ms,
        ready_s=session.stack.ready_s,
        late=timer.late,
        points=sorted(timer.points),
        phase=phase,
        verdict=verdict,
        statuses=timer.statuses,
    )
