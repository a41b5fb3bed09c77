"""Relay: N outbox rows appear at once in front of one idle `hsepay relay` process; time until all are sent.

The rows (`order.created` events, as POST /orders writes them) are committed in one transaction
while the relay is up, leading and idle, so it meets the whole backlog at once, as after a restart,
but its process start-up is not part of the figure. Start and end are on the database's clock (the
commit, the last `sent_at`). Nothing consumes the topic meanwhile: the relay has the box to itself.

The audit reads the topic back from the beginning: every row must be there (duplicates are legal,
at least once, and reported), and within each partition the rows must appear in outbox-id order,
which is what per-key order rests on.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from sqlalchemy import exists, func, select

from hsepay.bench.results import Chart, Context, Verdict, per_unit_ms
from hsepay.bench.stack import Scratch, Stack, describe_engines, relay_roles
from hsepay.bench.stats import rate_series, series_step
from hsepay.bench.usage import Phase, measure
from hsepay.config import Settings
from hsepay.orders.events import payment_requested
from hsepay.orders.tables import outbox
from hsepay.relay.broker import BrokerConfig, ensure_topics, partition_offsets
from hsepay.relay.store import enqueue

__all__ = ["RelayResult", "relay"]

WRITE_CHUNK = 5000
USERS = 1000


@dataclass
class RelayResult:
    context: Context
    rows: int
    fill_s: float
    relay_s: float
    batch_size: int
    phase: Phase
    verdict: Verdict
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    ready_s: float | None = None

    @property
    def events_per_s(self) -> float:
        return round(self.rows / self.relay_s, 1) if self.relay_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": "relay",
            "ok": self.verdict.ok,
            "rows": self.rows,
            "fill_s": round(self.fill_s, 3),
            "relay_s": round(self.relay_s, 3),
            "events_per_s": self.events_per_s,
            "batch_size": self.batch_size,
            "ready_s": None if self.ready_s is None else round(self.ready_s, 2),
            "processes": self.phase.to_json(),
            "cpu_ms_per_event": per_unit_ms(self.phase, self.rows),
            "series": {name: [list(point) for point in points] for name, points in self.series.items()},
            "verdict": self.verdict.to_json(),
            "context": self.context.to_json(),
        }

    def table_rows(self) -> list[tuple[str, Any]]:
        return [
            ("outbox rows", f"{self.rows:,} (written in {self.fill_s:.2f} s)"),
            ("relayed in", f"{self.relay_s:.2f} s, batches of {self.batch_size}"),
            ("events/s (rows → acked messages, marked sent)", f"{self.events_per_s:,.0f}"),
        ]

    def charts(self) -> list[Chart]:
        return [Chart("series", f"Relay of {self.rows:,} outbox rows: marked sent per second", series=self.series)]

    def processes(self) -> tuple[Phase, int, str]:
        return self.phase, self.rows, "event"


async def relay(settings: Settings, *, rows: int, timeout: float, cold: bool = False) -> RelayResult:
    """`cold`: fill the outbox with no relay running, then start the process; the figure then
    includes its start-up (imports, broker probe, lock), as after a deploy or a crash."""
    scratch = await asyncio.to_thread(Scratch.prepare, settings, {"orders": "hsepay_bench_relay"}, name="relay")
    system = await scratch.system(["orders"])
    specs = relay_roles("orders")
    stack = Stack(scratch, specs)
    try:
        topic = system.settings.kafka.orders_topic
        broker = system["orders"].broker
        await ensure_topics(broker, [topic])
        layout = "one relay process (hsepay relay orders), nothing else"
        if cold:
            layout += "; started after the fill, its start-up timed"
        context = Context("relay", layout, await describe_engines(system))
        context.settings = {k: v for k, v in scratch.environ.items() if k.startswith("HSEPAY_RELAY")}
        if not cold:
            await stack.start()
            await _wait_active(specs[0].ready_url, timeout=60)
        users = [uuid.uuid4() for _ in range(USERS)]
        messages = [
            payment_requested(order_id=uuid.uuid4(), user_id=users[i % USERS], amount=1, topic=topic)
            for i in range(rows)
        ]
        loop = asyncio.get_running_loop()
        async with system.engine("orders").connect() as conn:
            began = loop.time()
            transaction = await conn.begin()
            for start in range(0, rows, WRITE_CHUNK):
                await enqueue(conn, outbox, messages[start : start + WRITE_CHUNK])
            if cold:
                await transaction.commit()
                fill_s = loop.time() - began
                committed = await _db_now(conn)  # the clock starts as the process is spawned
                stack.roles.start_all()
                born = [replace(t, since_start=True) for t in stack.tracked()]
                with measure(born + scratch.tracked_engines()) as phase:
                    await _wait_sent(conn, timeout)
            else:
                with measure(stack.tracked() + scratch.tracked_engines()) as phase:
                    await transaction.commit()
                    fill_s = loop.time() - began
                    committed = await _db_now(conn)
                    await _wait_sent(conn, timeout)
        async with system.engine("orders").connect() as conn:
            sent = [float(t) for t in (await conn.execute(select(func.extract("epoch", outbox.c.sent_at)))).scalars()]
            ids = dict((await conn.execute(select(outbox.c.event_id, outbox.c.id))).all())
        finished = max(sent)
        facts = await _read_back(broker, topic, ids)
        problems = _problems(facts, rows)
        problems += [f"role {name} died during the run (exit {code})" for name, code in stack.died().items()]
        notes = [f"{facts['duplicates']} message(s) published twice (legal: at least once)"] * bool(facts["duplicates"])
        context.finish()
        return RelayResult(
            context=context,
            rows=rows,
            fill_s=fill_s,
            relay_s=finished - committed,
            batch_size=system.settings.relay.batch_size,
            phase=phase,
            verdict=Verdict(ok=not problems, problems=problems, audit=facts, notes=notes),
            series={
                "rows marked sent": rate_series(
                    sent,
                    committed,
                    finished,
                    series_step(finished - committed),
                    window=(finished - committed) / 15,
                )
            },
            ready_s=stack.ready_s,
        )
    finally:
        await asyncio.to_thread(stack.stop)
        await scratch.close(system)


async def _wait_active(url: str, timeout: float) -> None:
    """Until the relay holds the outbox's lock (ready also means standing by)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            checks = (await client.get(f"{url}/health/ready")).json().get("checks", {})
            if any(check.get("state") == "active" for check in checks.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the relay did not become active within {timeout:g}s: {checks}")
            await asyncio.sleep(0.05)


async def _db_now(conn) -> float:
    now = (await conn.execute(select(func.extract("epoch", func.clock_timestamp())))).scalar_one()
    await conn.commit()
    return float(now)


async def _wait_sent(conn, timeout: float) -> None:
    """Until no row is unsent (EXISTS on the pending index: a count over 100k rows, polled, would
    load PostgreSQL itself). The end of the run is read from `sent_at`, so 50 ms steps lose nothing."""
    deadline = time.monotonic() + timeout
    pending = select(exists().where(outbox.c.sent_at.is_(None)))
    while (await conn.execute(pending)).scalar_one():
        await conn.commit()  # a fresh snapshot for the next look
        if time.monotonic() > deadline:
            raise TimeoutError(f"outbox rows still unsent after {timeout:g}s")
        await asyncio.sleep(0.05)
    await conn.commit()


async def _read_back(broker: BrokerConfig, topic: str, ids: dict[uuid.UUID, int]) -> dict[str, Any]:
    """Every message of the topic, checked against the outbox rows (event id -> outbox id)."""
    consumer = AIOKafkaConsumer(
        **broker.client_options(),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    seen: set[uuid.UUID] = set()
    facts = {"messages": 0, "duplicates": 0, "unknown": 0, "out_of_order": 0}
    try:
        ends = {tp: end for tp, (end, _) in (await partition_offsets(broker, None, [topic])).items()}
        partitions = sorted(ends)
        if not partitions:
            raise RuntimeError(f"topic {topic} has no partitions")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        last: dict[TopicPartition, int] = {}
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    facts["messages"] += 1
                    event_id = uuid.UUID(dict(record.headers)["event_id"].decode())
                    row = ids.get(event_id)
                    if row is None:
                        facts["unknown"] += 1
                    elif event_id in seen:
                        facts["duplicates"] += 1
                    else:
                        seen.add(event_id)
                        if row < last.get(tp, -1):
                            facts["out_of_order"] += 1
                        last[tp] = row
    finally:
        await consumer.stop()
    facts["distinct"] = len(seen)
    facts["missing"] = len(ids) - len(seen)
    return facts


def _problems(facts: dict[str, Any], rows: int) -> list[str]:
    problems = []
    if facts["missing"]:
        problems.append(f"{facts['missing']} of {rows} outbox rows are not on the topic")
    if facts["unknown"]:
        problems.append(f"{facts['unknown']} message(s) on the topic match no outbox row")
    if facts["out_of_order"]:
        problems.append(f"{facts['out_of_order']} message(s) out of outbox order within their partition")
    return problems
