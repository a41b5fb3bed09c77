"""Http: POST /orders at N connections from several client processes, the saga running behind the API.

The client is `hsepay.bench.loadgen` (a closed loop per connection, in `clients` processes); its CPU
is reported so that a reader can see it was not the bottleneck. After the load the bench waits for
every accepted order to become final and audits: each 202 must be exactly one order, and every
order final with the money right. With `target` the load goes to any URL that takes the same body
(e.g. the original Go service, for a same-box comparison) and nothing is audited.

Two variants: with `apis_only` (a session opened with the APIs alone) the relays and consumers
start only after the load, so the figure is POST /orders alone and the settling is still audited;
with `read` the load is `GET /order/{id}` over orders placed beforehand (one per user), the cost of
a read in the API process.

(Over 300 lines: one scenario in three modes — saga running, POST alone, GET — that share the
stack, the client processes and the audit.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import func, select

from hsepay.bench.loadgen import Call, LoadResult, generate_load
from hsepay.bench.results import Chart, Context, Verdict, per_unit_ms
from hsepay.bench.session import SagaSession
from hsepay.bench.stats import Histogram, rate_series
from hsepay.bench.usage import Phase, ProcessFigures, measure
from hsepay.orders import operations as orders_ops
from hsepay.orders.tables import orders

__all__ = ["HttpResult", "http", "http_external"]

CLIENT_CPU_WARNING = 0.8
"""A client process using more than this share of a core may be holding the load back."""


@dataclass
class HttpResult:
    context: Context
    target: str
    connections: int
    warmup_s: float
    duration_s: float
    rate: float
    latency: Histogram
    statuses: dict[int, int]
    statuses_total: dict[int, int]
    errors: dict[str, int]
    errors_total: dict[str, int]
    clients: list[dict[str, Any]]
    series: dict[str, list[tuple[float, float]]]
    phase: Phase | None
    verdict: Verdict
    requests: int = 0
    ready_s: float | None = None
    orders_accepted: int | None = None
    orders_in_database: int | None = None
    drain_after_s: float | None = None
    """Seconds from the end of the load until every accepted order was final."""
    workers_held: bool = False
    """The relays and consumers started only after the load (POST /orders alone)."""

    @classmethod
    def of_load(
        cls, load: Any, *, context: Context, target: str, connections: int, warmup: float, **rest: Any
    ) -> HttpResult:
        """The figures `generate_load` measured, with what the caller adds (`rest`)."""
        return cls(
            context=context,
            target=target,
            connections=connections,
            warmup_s=warmup,
            duration_s=load.window_s,
            rate=load.rate,
            latency=load.histogram,
            statuses=dict(load.statuses),
            statuses_total=dict(load.statuses_total),
            errors=dict(load.errors),
            errors_total=dict(load.errors_total),
            clients=[c.to_json() for c in load.clients],
            requests=load.requests,
            **rest,
        )

    @property
    def client_cpu_s(self) -> float:
        return sum(c["cpu_window_s"] for c in self.clients)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": "http",
            "ok": self.verdict.ok,
            "target": self.target,
            "connections": self.connections,
            "client_processes": len(self.clients),
            "warmup_s": self.warmup_s,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "requests_per_s": round(self.rate, 1),
            "latency": self.latency.summary_ms(),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "statuses_total": {str(k): v for k, v in sorted(self.statuses_total.items())},
            "transport_errors": self.errors,
            "transport_errors_total": self.errors_total,
            "clients": self.clients,
            "client_cpu_s": round(self.client_cpu_s, 3),
            "client_cpu_us_per_request": round(self.client_cpu_s * 1e6 / self.requests, 1) if self.requests else None,
            "ready_s": None if self.ready_s is None else round(self.ready_s, 2),
            "orders_accepted": self.orders_accepted,
            "orders_in_database": self.orders_in_database,
            "drain_after_load_s": self.drain_after_s,
            "workers_during_load": not self.workers_held,
            "processes": self.phase.to_json() if self.phase else [],
            "cpu_ms_per_request": per_unit_ms(self.phase, sum(self.statuses_total.values())) if self.phase else {},
            "series": {name: [list(point) for point in points] for name, points in self.series.items()},
            "verdict": self.verdict.to_json(),
            "context": self.context.to_json(),
        }

    def table_rows(self) -> list[tuple[str, Any]]:
        lat = self.latency.summary_ms()
        share = self.client_cpu_s / self.duration_s if self.duration_s else 0
        return [
            ("target", self.target),
            ("connections / client processes", f"{self.connections} / {len(self.clients)}"),
            ("requests/s (measured window)", f"{self.rate:,.0f} over {self.duration_s:.1f} s"),
            (
                "latency p50 / p90 / p99 / max",
                f"{lat['p50_ms']} / {lat['p90_ms']} / {lat['p99_ms']} / {lat['max_ms']} ms",
            ),
            ("statuses", ", ".join(f"{k}: {v:,}" for k, v in sorted(self.statuses.items())) or "-"),
            (
                "transport errors (window / whole run)",
                f"{sum(self.errors.values())} / {sum(self.errors_total.values())}",
            ),
            (
                "client CPU (all client processes)",
                f"{self.client_cpu_s:.2f} s = {share:.2f} cores"
                + (f", {self.client_cpu_s * 1e6 / self.requests:.0f} µs/request" if self.requests else ""),
            ),
            ("orders accepted / in the database", f"{self.orders_accepted} / {self.orders_in_database}"),
            (
                "all final after the load in" + (" (workers started after it)" if self.workers_held else ""),
                f"{self.drain_after_s} s" if self.drain_after_s is not None else "-",
            ),
        ]

    def charts(self) -> list[Chart]:
        return [
            Chart("histogram", f"POST /orders latency at {self.connections} connections", histogram=self.latency),
            Chart(
                "series",
                "Answers and settled orders per second (over the last second)",
                series=self.series,
                marks=[(self.warmup_s, "measured from here"), (self.warmup_s + self.duration_s, "load ends")],
            ),
        ]

    def processes(self) -> tuple[Phase | None, int, str]:
        """CPU per answer: the phase spans the whole load (warm-up included), so every answer counts."""
        return self.phase, sum(self.statuses_total.values()), "request"


def _bodies(users: Sequence[uuid.UUID], headers) -> list[Call]:
    return [
        Call(
            "POST",
            None,
            msgspec.json.encode({"user_id": str(user), "amount": 1, "description": "http"}).decode(),
            headers(user),
        )
        for user in users
    ]


async def _reads(session: SagaSession, users: Sequence[uuid.UUID]) -> list[Call]:
    """One order per user, written at once as POST /orders writes them; a GET of each."""
    async with session.system.engine("orders").begin() as conn:
        placed = await orders_ops.create_orders(
            conn,
            [orders_ops.NewOrder(user, 1, "http-read") for user in users],
            topic=session.system.settings.kafka.orders_topic,
        )
    session.orders_placed += len(placed)
    return [Call("GET", f"/order/{order.id}", None, session.headers(order.user_id)) for order in placed]


def _notes(load: LoadResult) -> list[str]:
    notes = []
    for client in load.clients:
        share = client.cpu_window_s / load.window_s if load.window_s else 0
        if share > CLIENT_CPU_WARNING:
            notes.append(
                f"client pid {client.pid} used {share:.0%} of a core: the client may be the bottleneck (add --clients)"
            )
    if sum(load.errors_total.values()):
        notes.append(f"transport errors: {dict(load.errors_total)}")
    if load.unfinished:
        notes.append(f"{load.unfinished} request(s) still unanswered when the load stopped")
    return notes


async def http(
    session: SagaSession,
    *,
    connections: int,
    clients: int,
    warmup: float,
    duration: float,
    users: int,
    settle_timeout: float,
    read: bool = False,
) -> HttpResult:
    """POST /orders (or with `read`, GET /order/{id}) at `connections`; then every order must be
    final and audited. A session opened with `apis_only` starts its workers after the load."""
    context = session.context("http")
    people = await session.rich_users(users)
    requests = await _reads(session, people) if read else _bodies(people, session.headers)
    held = session.workers_held
    if read and not held:
        await session.wait_all_final(settle_timeout)  # the reads find their orders settled
    before = await _count_orders(session)
    with measure(session.tracked()) as phase:
        load = await generate_load(
            f"{session.orders_url}/{'order' if read else 'orders'}",
            requests,
            connections=connections,
            processes=clients,
            warmup=warmup,
            duration=duration,
        )
    load_ended = time.time()
    phase.processes += [
        ProcessFigures(f"load client {i + 1} ({c.connections} connections)", c.pid, c.cpu_load_s, c.max_rss_mb)
        for i, c in enumerate(load.clients)
    ]
    problems = []
    if held:
        await session.start_workers()
    try:
        drain_s = round(await session.wait_all_final(settle_timeout), 2)
    except TimeoutError as exc:
        drain_s = None
        problems.append(str(exc))
    in_database = await _count_orders(session) - before
    accepted = 0 if read else load.statuses_total.get(202, 0)
    session.orders_placed += in_database
    lost_in_transit = sum(load.errors_total.values()) + load.unfinished
    if not accepted <= in_database <= accepted + lost_in_transit:
        problems.append(f"{accepted} orders accepted (202) but {in_database} in the database")
    if read and set(load.statuses_total) != {200}:
        problems.append(f"GET /order/{{id}} answered {dict(load.statuses_total)}")
    verdict = await session.verdict(settle_timeout=settle_timeout, expect=problems)
    verdict.notes += _notes(load)
    settled = await _settled_times(session, load.started_at)
    end = max([load_ended, *settled])
    context.finish()
    return HttpResult.of_load(
        load,
        context=context,
        target=f"{'GET ' + session.orders_url + '/order/{id}' if read else session.orders_url + '/orders'} "
        f"({session.layout}{', workers started after the load' if held else ''})",
        connections=connections,
        warmup=warmup,
        series={
            "answers (client)": load.series(),
            "orders final (orders database)": rate_series(settled, load.started_at, end, 0.25, window=1.0),
        },
        phase=phase,
        verdict=verdict,
        ready_s=session.stack.ready_s,
        orders_accepted=accepted,
        orders_in_database=in_database,
        drain_after_s=drain_s,
        workers_held=held,
    )


async def http_external(
    url: str,
    users: Sequence[uuid.UUID],
    *,
    connections: int,
    clients: int,
    warmup: float,
    duration: float,
) -> HttpResult:
    """The same load against any server; nothing is started and nothing can be audited."""
    context = Context("http", f"external target {url}")
    load = await generate_load(
        url,
        _bodies(users, lambda user: {}),
        connections=connections,
        processes=clients,
        warmup=warmup,
        duration=duration,
    )
    context.finish()
    verdict = Verdict(ok=True, notes=["external target: not audited", *_notes(load)])
    return HttpResult.of_load(
        load,
        context=context,
        target=url,
        connections=connections,
        warmup=warmup,
        series={"answers (client)": load.series()},
        phase=None,
        verdict=verdict,
    )


async def _count_orders(session: SagaSession) -> int:
    async with session.system.engine("orders").connect() as conn:
        return (await conn.execute(select(func.count()).select_from(orders))).scalar_one()


async def _settled_times(session: SagaSession, since: float) -> list[float]:
    async with session.system.engine("orders").connect() as conn:
        rows = await conn.execute(
            select(func.extract("epoch", orders.c.updated_at)).where(
                orders.c.description == "http", orders.c.updated_at >= func.to_timestamp(since)
            )
        )
        return [float(t) for t in rows.scalars()]
