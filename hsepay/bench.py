"""`hsepay bench`: end-to-end figures of the saga, on scratch databases and topics of its own.

Two phases, then the audit:
- drain: with the workers warm, N orders are written as fast as the database takes them (1,000
  per transaction) and the clock runs from the first write until every order is final (orders/s);
- latency: orders placed one at a time at a light rate, each timed from its creation to its
  final status (p50/p99), with the workers warm.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select

from hsepay import registry
from hsepay.audit import check_invariants
from hsepay.bootstrap import Runtime
from hsepay.orders import operations as orders_ops
from hsepay.orders.tables import orders
from hsepay.payments import operations as payments_ops
from hsepay.roles import start_workers

__all__ = ["BenchResult", "measure_saga"]

WRITE_BATCH = 1000


@dataclass
class BenchResult:
    orders: int
    users: int
    backlog_write_s: float
    drain_s: float
    drain_orders_per_s: float
    latency_samples: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    succeeded: int
    failed: int
    audit_ok: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


async def _fund(rt: Runtime, users: list[uuid.UUID], balance: int) -> None:
    async with rt.engine("payments").begin() as conn:
        for user in users:
            await payments_ops.create_account(conn, user)
            await payments_ops.deposit(conn, user, balance)


async def _write_backlog(rt: Runtime, users: list[uuid.UUID], count: int, amount: int) -> list[uuid.UUID]:
    """Orders and their payment requests, WRITE_BATCH per transaction, through the orders service."""
    topic = rt.settings.kafka.orders_topic
    ids: list[uuid.UUID] = []
    for start in range(0, count, WRITE_BATCH):
        batch = [
            orders_ops.NewOrder(users[i % len(users)], amount, "bench")
            for i in range(start, min(count, start + WRITE_BATCH))
        ]
        async with rt.engine("orders").begin() as conn:
            created = await orders_ops.create_orders(conn, batch, topic=topic)
        ids.extend(order.id for order in created)
    return ids


async def _count_created(rt: Runtime) -> int:
    async with rt.engine("orders").connect() as conn:
        return (
            await conn.execute(select(func.count()).select_from(orders).where(orders.c.status == "created"))
        ).scalar_one()


async def _wait_drained(rt: Runtime, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await _count_created(rt):
        if time.monotonic() > deadline:
            raise TimeoutError(f"orders still created after {timeout:g}s")
        await asyncio.sleep(0.02)


async def _one_order_latency(rt: Runtime, user: uuid.UUID, timeout: float) -> float:
    started = time.perf_counter()
    async with rt.engine("orders").begin() as conn:
        order = await orders_ops.create_order(
            conn, user_id=user, amount=1, description="latency", topic=rt.settings.kafka.orders_topic
        )
    deadline = time.monotonic() + timeout
    while True:
        async with rt.engine("orders").connect() as conn:
            status = (await conn.execute(select(orders.c.status).where(orders.c.id == order.id))).scalar_one()
        if status != "created":
            return (time.perf_counter() - started) * 1000
        if time.monotonic() > deadline:
            raise TimeoutError(f"order {order.id} still created after {timeout:g}s")
        await asyncio.sleep(0.001)


async def measure_saga(
    rt: Runtime, *, orders_count: int, users: int, latency_samples: int, rate: float, timeout: float
) -> BenchResult:
    suffix = uuid.uuid4().hex[:8]
    kafka = replace(
        rt.settings.kafka,
        orders_topic=f"bench-{suffix}-orders",
        payment_status_topic=f"bench-{suffix}-payment-status",
        group_prefix=f"bench-{suffix}",
    )
    rt = Runtime(settings=replace(rt.settings, kafka=kafka), db_urls=rt.db_urls, engines=rt.engines, broker=rt.broker)
    people = [uuid.uuid4() for _ in range(users)]
    amount = 10
    per_user = -(-orders_count // users)
    # Fund 90% of each user's orders, so about one in ten is refused for insufficient funds.
    await _fund(rt, people, balance=amount * per_user * 9 // 10)
    timer = uuid.uuid4()  # the latency phase's own user, funded for every one of its orders
    await _fund(rt, [timer], balance=latency_samples + 1)

    async with start_workers(rt, registry.with_database()):
        # Warm up: the first order also waits for both consumer groups to form (seconds on Tansu).
        await _one_order_latency(rt, timer, timeout=60)
        started = time.perf_counter()
        await _write_backlog(rt, people, orders_count, amount)
        backlog_write_s = time.perf_counter() - started
        await _wait_drained(rt, timeout)
        drain_s = time.perf_counter() - started
        latencies = []
        for _ in range(latency_samples):
            latencies.append(await _one_order_latency(rt, timer, timeout=10))
            await asyncio.sleep(1 / rate)

    async with rt.engine("orders").connect() as conn:
        counts = dict((await conn.execute(select(orders.c.status, func.count()).group_by(orders.c.status))).all())
    async with rt.engine("payments").connect() as p, rt.engine("orders").connect() as o:
        report = await check_invariants(p, o)
    latencies.sort()
    return BenchResult(
        orders=orders_count,
        users=users,
        backlog_write_s=round(backlog_write_s, 3),
        drain_s=round(drain_s, 3),
        drain_orders_per_s=round(orders_count / drain_s, 1),
        latency_samples=len(latencies),
        latency_p50_ms=round(statistics.median(latencies), 1) if latencies else None,
        latency_p99_ms=round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1) if latencies else None,
        latency_max_ms=round(latencies[-1], 1) if latencies else None,
        succeeded=counts.get("success", 0),
        failed=counts.get("failed", 0),
        audit_ok=report.ok,
    )
