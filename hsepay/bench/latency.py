"""Latency: orders sent one by one over HTTP at a steady rate, each timed from its POST to its final status.

Orders are sent on a fixed schedule (open loop: a slow answer does not delay the next order, so a
stall shows up in the figures instead of hiding in fewer samples). The final status is seen the way
a client sees it (`watch="http"`, the default): after its 202, each order is polled with
`GET /order/{id}` every `poll_every` seconds (2 ms: a checkout page waiting for the payment) until
the answer says success or failed; the GETs are counted, and their cost is in the API's CPU. With
`watch="db"` a poller asks the orders database every millisecond instead (one primary-key query for
every order in flight, on a connection of its own), which spares the API that load. The same orders
are also timed on the database's clock, created_at → updated_at: the saga alone, without HTTP and
without any poller.

`reads` adds a steady background of `GET /order/{id}` (an open loop from a client process of its
own, over orders placed beforehand) for the whole timed phase: whether readers starve the saga.

On a fresh stack the first order is timed on its own first: DESIGN §9's "first order after ready".

(Over 300 lines: the scenario, its polling client and the hop table, which all read the same
timestamps the saga writes.)
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

from hsepay.bench.hops import HOPS, hop_histograms
from hsepay.bench.httpclient import Endpoint, Pool, encode_post
from hsepay.bench.loadgen import Call, LoadResult, generate_load
from hsepay.bench.results import Chart, Context, Verdict, per_unit_ms
from hsepay.bench.session import SagaSession
from hsepay.bench.stats import Histogram
from hsepay.bench.usage import Phase, ProcessFigures, measure
from hsepay.bench.watch import HTTP_POLL_EVERY, FinalPoller, HttpWatcher
from hsepay.db import libpq_conninfo
from hsepay.orders.tables import orders

__all__ = ["LatencyResult", "latency"]

READ_CONNECTIONS = 16
READ_TARGETS = 200
"""Orders placed before the timed phase for the background reads to ask for."""


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
    watch: str = "http"
    """How the final status was seen: "http" (GET /order/{id} polling) or "db" (the bench asks the database)."""
    poll_every_ms: float | None = None
    gets: int = 0
    """GET /order/{id} answers the polling clients received."""
    get_statuses: dict[int, int] = field(default_factory=dict)
    reads: LoadResult | None = None
    """The background reads, if any."""
    reads_rate: float = 0.0
    hops: list[Histogram] = field(default_factory=list)
    """Per hop of hsepay.bench.hops.HOPS, over the timed orders with every timestamp."""
    hops_complete: int = 0
    same_clock: bool = True
    """PostgreSQL runs on this machine: the hops add up to the client's view."""

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": "latency",
            "ok": self.verdict.ok,
            "rate_per_s": self.rate,
            "watch": self.watch,
            "poll_every_ms": self.poll_every_ms,
            "gets": self.gets,
            "gets_per_order": round(self.gets / self.end_to_end.count, 1) if self.end_to_end.count else None,
            "get_statuses": {str(k): v for k, v in sorted(self.get_statuses.items())},
            "background_reads": self._reads_json(),
            "hops": {
                "orders": self.hops_complete,
                "same_clock": self.same_clock,
                "p50_ms": {name: h.summary_ms()["p50_ms"] for (name, _), h in zip(HOPS, self.hops, strict=False)},
                "p90_ms": {name: h.summary_ms()["p90_ms"] for (name, _), h in zip(HOPS, self.hops, strict=False)},
            },
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

    def _reads_json(self) -> dict[str, Any] | None:
        if self.reads is None:
            return None
        return {
            "rate_asked": self.reads_rate,
            "answers_per_s": round(self.reads.rate, 1),
            "latency": self.reads.histogram.summary_ms(),
            "statuses": {str(k): v for k, v in sorted(self.reads.statuses_total.items())},
            "transport_errors": dict(self.reads.errors_total),
            "skipped": self.reads.skipped,
        }

    def table_rows(self) -> list[tuple[str, Any]]:
        e2e, acc, saga = self.end_to_end.summary_ms(), self.accepted.summary_ms(), self.saga.summary_ms()
        seen_by = (
            f"GET /order/{{id}} every {self.poll_every_ms:g} ms" if self.watch == "http" else "the database, every 1 ms"
        )
        rows = [
            ("first order after ready: POST → final", f"{self.first_order_ms} ms"),
            ("roles started → all ready", f"{self.ready_s:.2f} s" if self.ready_s is not None else "-"),
            ("orders timed, at", f"{e2e['count']:,} at {self.rate:g}/s"),
            ("final status seen by", seen_by),
            ("POST → final p50 / p99 / max", f"{e2e['p50_ms']} / {e2e['p99_ms']} / {e2e['max_ms']} ms"),
            ("POST → 202 p50 / p99", f"{acc['p50_ms']} / {acc['p99_ms']} ms"),
            ("created_at → updated_at (database clock) p50 / p99", f"{saga['p50_ms']} / {saga['p99_ms']} ms"),
            ("not final in time", self.late),
        ]
        if self.watch == "http" and e2e["count"]:
            rows.append(("GETs by the polling clients (per order)", f"{self.gets:,} ({self.gets / e2e['count']:.1f})"))
        for (name, what), histogram in zip(HOPS, self.hops, strict=False):
            hop = histogram.summary_ms()
            rows.append((f"hop {name} p50 / p90", f"{hop['p50_ms']} / {hop['p90_ms']} ms ({what})"))
        if self.reads is not None:
            lat = self.reads.histogram.summary_ms()
            rows.append(
                (
                    "background reads: asked / answered per s, p50 / p99, skipped",
                    f"{self.reads_rate:g} / {self.reads.rate:,.0f}, {lat['p50_ms']} / {lat['p99_ms']} ms, "
                    f"{self.reads.skipped}",
                )
            )
        return rows

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


class _Timer:
    def __init__(
        self,
        session: SagaSession,
        pool: Pool,
        poller: FinalPoller | HttpWatcher,
        endpoint: Endpoint,
        timeout: float,
    ):
        self.session, self.pool, self.poller, self.endpoint, self.timeout = session, pool, poller, endpoint, timeout
        self.end_to_end, self.accepted = Histogram(), Histogram()
        self.ids: list[uuid.UUID] = []
        self.owners: dict[uuid.UUID, uuid.UUID] = {}
        self.walls: dict[uuid.UUID, tuple[float, float]] = {}
        """Order id -> (POST sent, final seen) as Unix times, for the hops."""
        self.points: list[tuple[float, float]] = []
        self.statuses: dict[int, int] = {}
        self.late = 0
        self.errors: list[str] = []

    async def one(self, user: uuid.UUID, origin: float) -> float | None:
        """POST one order and wait for its final status; seconds it took (None if it failed)."""
        body = msgspec.json.encode({"user_id": str(user), "amount": 1, "description": "latency"})
        request = encode_post(self.endpoint, body, self.session.headers(user))
        sent, sent_wall = time.perf_counter(), time.time()
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
        self.owners[order_id] = user
        try:
            final = await asyncio.wait_for(self.poller.wait(order_id, user), self.timeout)
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError):
                self.late += 1
            else:
                self.errors.append(f"polling order {order_id}: {type(exc).__name__}: {exc}")
            if isinstance(self.poller, FinalPoller):
                self.poller.waiting.pop(order_id, None)
            return None
        took = final - sent
        self.walls[order_id] = (sent_wall, sent_wall + took)
        self.accepted.record(accepted - sent)
        self.end_to_end.record(took)
        self.points.append((round(sent - origin, 3), round(took * 1000, 2)))
        return took


async def latency(
    session: SagaSession,
    *,
    samples: int,
    rate: float,
    users: int,
    timeout: float,
    watch: str = "http",
    poll_every: float = HTTP_POLL_EVERY,
    reads: float = 0.0,
) -> LatencyResult:
    """Time `samples` orders POSTed at `rate` per second from their POST to their final status,
    seen by `watch` ("http": GET polling every `poll_every` s; "db": the database), with `reads`
    background GETs per second meanwhile."""
    context = session.context("latency")
    people = await session.rich_users(users)
    endpoint = Endpoint(f"{session.orders_url}/orders")
    pool = Pool(endpoint)
    conninfo = libpq_conninfo(session.system["orders"].url)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        poller = HttpWatcher(Pool(endpoint), poll_every, session.headers) if watch == "http" else FinalPoller(conn)
        timer = _Timer(session, pool, poller, endpoint, timeout)
        first_ms = None
        if session.orders_placed == 0:
            first = await timer.one(people[0], time.perf_counter())
            first_ms = None if first is None else round(first * 1000, 1)
            timer.end_to_end, timer.accepted, timer.points, timer.statuses = Histogram(), Histogram(), [], {}
            timer.walls.clear()
        targets = await _read_targets(timer, people, origin=time.perf_counter()) if reads else []
        if isinstance(poller, HttpWatcher):
            poller.gets, poller.statuses = 0, {}
        with measure(session.tracked()) as phase:
            background = (
                asyncio.create_task(_background_reads(session, endpoint, targets, reads, samples / rate))
                if reads
                else None
            )
            if background is not None:
                await asyncio.sleep(READ_WARMUP)
            origin = time.perf_counter()
            tasks = []
            for i in range(samples):
                pause = origin + i / rate - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
                tasks.append(asyncio.create_task(timer.one(people[i % len(people)], origin)))
            await asyncio.gather(*tasks)
            read_load = await background if background is not None else None
    pool.close()
    if isinstance(poller, HttpWatcher):
        poller.pool.close()
        timer.errors += poller.errors
    if read_load is not None:
        phase.processes += [
            ProcessFigures(f"read client ({c.connections} connections)", c.pid, c.cpu_load_s, c.max_rss_mb)
            for c in read_load.clients
        ]
        bad = {k: v for k, v in read_load.statuses_total.items() if k != 200}
        if bad or read_load.errors_total:
            timer.errors.append(f"background reads: statuses {bad}, transport errors {dict(read_load.errors_total)}")
    session.orders_placed += len(timer.ids)
    hops, complete = await hop_histograms(session.system, {i: timer.walls[i] for i in timer.ids if i in timer.walls})
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
        watch=watch,
        poll_every_ms=round(poll_every * 1000, 3) if watch == "http" else None,
        gets=poller.gets if isinstance(poller, HttpWatcher) else 0,
        get_statuses=poller.statuses if isinstance(poller, HttpWatcher) else {},
        reads=read_load,
        reads_rate=reads,
        hops=hops,
        hops_complete=complete,
        same_clock=any(t.name.startswith("postgres") for t in session.scratch.tracked_engines()),
    )


READ_WARMUP = 1.0
"""Seconds of background reads before the first timed order."""


async def _read_targets(timer: _Timer, people: list[uuid.UUID], origin: float) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(order id, its user) of orders placed and settled before the timed phase, for the reads;
    they are left out of the timed orders."""
    already = len(timer.ids)
    for start in range(0, READ_TARGETS, 20):
        await asyncio.gather(*(timer.one(people[i % len(people)], origin) for i in range(start, start + 20)))
    placed = [(order_id, timer.owners[order_id]) for order_id in timer.ids[already:]]
    del timer.ids[already:]
    timer.end_to_end, timer.accepted, timer.points, timer.statuses = Histogram(), Histogram(), [], {}
    timer.walls.clear()
    return placed


async def _background_reads(
    session: SagaSession, endpoint: Endpoint, targets: list[tuple[uuid.UUID, uuid.UUID]], rate: float, seconds: float
) -> LoadResult:
    calls = [Call("GET", f"/order/{order_id}", None, session.headers(user)) for order_id, user in targets]
    return await generate_load(
        f"{session.orders_url}/order",
        calls,
        connections=READ_CONNECTIONS,
        processes=1,
        warmup=READ_WARMUP,
        duration=seconds + 1.0,
        rate=rate,
    )
