"""Drain: a backlog of N orders appears at once; the clock runs until every one is final.

The backlog is written by the orders service layer (`create_orders`: orders and their payment
requests, as POST /orders writes them) in ONE transaction while the roles run idle, so it appears
to them at its commit, as a backlog does after an outage of the broker or the relays. Start and end
are read on the database's clock: the commit, and the last order's settlement (`updated_at`), so
neither the bench's polling nor its scheduling enters the figure. The stages' timestamps already
in the databases (outbox `sent_at`, `decided_at`, `updated_at`) give each stage's rate over time.

Each user is funded for 90% of its orders, so about one in ten is refused for insufficient funds
and both answers travel the saga.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from hsepay.bench.results import Chart, Context, Verdict, per_unit_ms
from hsepay.bench.session import SagaSession, open_accounts
from hsepay.bench.stats import progress_series, rate_series, series_step
from hsepay.bench.usage import Phase, measure
from hsepay.orders import operations as orders_ops
from hsepay.orders.tables import orders
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments.tables import outbox as payments_outbox
from hsepay.payments.tables import payment_decisions

__all__ = ["DrainResult", "DrainRun", "drain", "drain_backlogs"]

WRITE_CHUNK = 1000
AMOUNT = 10


@dataclass
class DrainRun:
    orders: int
    write_s: float
    drain_s: float
    succeeded: int
    failed: int
    phase: Phase
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Each stage's events per second over the drain."""
    progress: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """How many events each stage had done by each moment of the drain."""

    @property
    def orders_per_s(self) -> float:
        return round(self.orders / self.drain_s, 1) if self.drain_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "backlog_write_s": round(self.write_s, 3),
            "drain_s": round(self.drain_s, 3),
            "orders_per_s": self.orders_per_s,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "processes": self.phase.to_json(),
            "cpu_ms_per_order": per_unit_ms(self.phase, self.orders),
            "series": {name: [list(point) for point in points] for name, points in self.series.items()},
            "progress": {name: [list(point) for point in points] for name, points in self.progress.items()},
        }


@dataclass
class DrainResult:
    context: Context
    users: int
    runs: list[DrainRun]
    verdict: Verdict
    ready_s: float | None = None

    @property
    def cost_ratio(self) -> float | None:
        """orders/s of the last backlog over the first: 1.0 is a flat cost per order."""
        if len(self.runs) < 2 or not self.runs[0].orders_per_s:
            return None
        return round(self.runs[-1].orders_per_s / self.runs[0].orders_per_s, 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": "drain",
            "ok": self.verdict.ok,
            "users": self.users,
            "ready_s": None if self.ready_s is None else round(self.ready_s, 2),
            "runs": [run.to_json() for run in self.runs],
            "cost_ratio_last_to_first": self.cost_ratio,
            "verdict": self.verdict.to_json(),
            "context": self.context.to_json(),
        }

    def table_rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = []
        for run in self.runs:
            rows += [
                (f"backlog of {run.orders:,}: drained in", f"{run.drain_s:.2f} s (written in {run.write_s:.2f} s)"),
                (f"backlog of {run.orders:,}: orders/s end to end", f"{run.orders_per_s:,.0f}"),
                (f"backlog of {run.orders:,}: succeeded / failed", f"{run.succeeded:,} / {run.failed:,}"),
            ]
        if self.cost_ratio is not None:
            rows.append(("orders/s last ÷ first backlog (1.0 = flat cost)", self.cost_ratio))
        return rows

    def charts(self) -> list[Chart]:
        charts = []
        for run in self.runs:
            charts.append(Chart("series", f"Drain of {run.orders:,} orders: each stage per second", series=run.series))
            charts.append(
                Chart(
                    "series",
                    f"Drain of {run.orders:,} orders: done by each stage",
                    series=run.progress,
                    y_label="events",
                )
            )
        return charts

    def processes(self) -> tuple[Phase, int, str]:
        last = self.runs[-1]
        return last.phase, last.orders, "order"


async def drain_backlogs(session: SagaSession, *, sizes: list[int], users: int, timeout: float) -> DrainResult:
    """Drain each backlog in turn on the same stack (10k then 100k shows whether the cost per order
    stays flat as the tables grow), then audit."""
    context = session.context("drain")
    runs = [await drain(session, orders_count=size, users=users, timeout=timeout) for size in sizes]
    verdict = await session.verdict(settle_timeout=timeout)
    context.finish()
    return DrainResult(context=context, users=users, runs=runs, verdict=verdict, ready_s=session.stack.ready_s)


async def drain(session: SagaSession, *, orders_count: int, users: int, timeout: float) -> DrainRun:
    system = session.system
    per_user = -(-orders_count // users)
    people = await open_accounts(system, users, balance=AMOUNT * per_user * 9 // 10)
    marker = f"drain-{uuid.uuid4().hex[:8]}"
    loop = asyncio.get_running_loop()
    async with system.engine("orders").connect() as conn:
        began = loop.time()
        transaction = await conn.begin()
        for start in range(0, orders_count, WRITE_CHUNK):
            chunk = [
                orders_ops.NewOrder(people[i % users], AMOUNT, marker)
                for i in range(start, min(orders_count, start + WRITE_CHUNK))
            ]
            await orders_ops.create_orders(conn, chunk, topic=session.topic)
        with measure(session.tracked()) as phase:
            await transaction.commit()
            write_s = loop.time() - began
            committed = await session.db_now()
            await session.wait_all_final(timeout, interval=0.1)
    session.orders_placed += orders_count
    async with system.engine("orders").connect() as conn:
        settled = (
            await conn.execute(select(func.extract("epoch", orders.c.updated_at)).where(orders.c.description == marker))
        ).scalars()
        settled = [float(t) for t in settled]
        counts = dict(
            (
                await conn.execute(
                    select(orders.c.status, func.count())
                    .where(orders.c.description == marker)
                    .group_by(orders.c.status)
                )
            ).all()
        )
    finished = max(settled)
    series, progress = await _stages(session, committed, finished, settled)
    return DrainRun(
        orders=orders_count,
        write_s=write_s,
        drain_s=finished - committed,
        succeeded=counts.get("success", 0),
        failed=counts.get("failed", 0),
        phase=phase,
        series=series,
        progress=progress,
    )


async def _stages(
    session: SagaSession, start: float, end: float, settled: list[float]
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[tuple[float, float]]]]:
    """Each stage's rate and progress over the drain, from the timestamps the saga wrote.

    Stages work in batches (a relay round, a consumer's fetch), so the rate is taken over a sliding
    window of about a fifteenth of the drain: bursts are smoothed, a stall still shows."""
    duration = end - start
    step = series_step(duration)
    window = max(step, duration / 15)

    async def times(service: str, column) -> list[float]:
        async with session.system.engine(service).connect() as conn:
            rows = await conn.execute(select(func.extract("epoch", column)).where(column >= func.to_timestamp(start)))
            return [float(t) for t in rows.scalars()]

    stages = {
        "order.created published (orders relay)": await times("orders", orders_outbox.c.sent_at),
        "payments decided (payments consumer)": await times("payments", payment_decisions.c.decided_at),
        "results published (payments relay)": await times("payments", payments_outbox.c.sent_at),
        "orders final (orders consumer)": settled,
    }
    rates = {name: rate_series(times, start, end, step, window) for name, times in stages.items()}
    progress = {name: progress_series(times, start, end, step) for name, times in stages.items()}
    return rates, progress
