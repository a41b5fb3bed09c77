"""Issue 22's loss, reproduced and caught: with asynchronous replication and replicas a few seconds
behind, a kill -9 of the leader loses orders answered 202 and deposits answered 200. The money
audit alone passes (both databases lost the same consistent tail); the audit against the topics
names every lost order whose payment request reached the broker, and the repair restores them,
each debited once. Then what each role said at start: the database promised nothing.

Bounded: one fault, replicas 3 s behind, the cluster back in synchronous mode afterwards.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay import registry
from hsepay.audit import check_invariants
from hsepay.bootstrap import built
from hsepay.bootstrap.event_secrets import history_verifier
from hsepay.chaos.faults import Fault
from hsepay.chaos.run import ChaosSetup, run_chaos
from hsepay.config import Settings
from hsepay.orders.operations import restore_orders
from hsepay.orders.tables import orders
from hsepay.roles import start_workers
from hsepay.topic_audit import TopicWitness
from tests.chaos.reporting import record as _record

pytestmark = pytest.mark.chaos

MONEY_CHECKS = {
    "balance_not_negative",
    "balance_equals_ledger",
    "debited_at_most_once",
    "orders_match_decisions",
    "decisions_have_orders",
    "conservation",
}
LAG = 3.0


def _failing(audit: dict) -> dict[str, dict]:
    return {check["name"]: check for check in audit["checks"] if not check["ok"]}


async def _asynchronous(cluster) -> None:
    await cluster.set_dynamic(synchronous_mode=False, maximum_lag_on_failover=64 * 1024 * 1024)

    async def no_sync_standby() -> bool:
        state = await cluster.cluster_state() or {}
        return not any(m.get("role") == "sync_standby" for m in state.get("members", []))

    deadline = time.monotonic() + 60
    while not await no_sync_standby():
        assert time.monotonic() < deadline, "Patroni kept a synchronous standby"
        await asyncio.sleep(0.2)


async def _synchronous_again(cluster) -> None:
    cluster.lag_before_kill = 0.0
    await cluster.set_dynamic(synchronous_mode=True, maximum_lag_on_failover=1048576)
    await cluster.wait_healthy(180)


async def test_an_asynchronous_failover_loses_acknowledged_writes_and_the_audit_names_them(
    tmp_path: Path, cluster, scratch_databases, private_tansu
):
    control, address = private_tansu
    environ = {
        "HSEPAY_DATA_DIR": str(tmp_path / "data"),
        "HSEPAY_PAYMENTS_DB": cluster.multi_host_url(scratch_databases["payments"]),
        "HSEPAY_ORDERS_DB": cluster.multi_host_url(scratch_databases["orders"]),
        "HSEPAY_KAFKA": address,
        "HSEPAY_KAFKA_PARTITIONS": "3",
        "HSEPAY_REDRIVE_AFTER": "10",
        "HSEPAY_REDRIVE_INTERVAL": "1",
        "HSEPAY_RELAY_STANDBY_INTERVAL": "0.5",
    }
    await _asynchronous(cluster)
    try:
        cluster.lag_before_kill = LAG
        setup = ChaosSetup(environ=environ, work_dir=tmp_path, broker=control, cluster=cluster, deposit_rate=5.0)
        plan = [Fault(6.0, "pg-kill-leader", down=2.0)]
        report = await run_chaos(setup, seed=47, orders=300, rate=20, users=200, plan=plan, settle_timeout=20)
    finally:
        await _synchronous_again(cluster)
    _record("ha-async-loss", report)
    summary = (
        f"asynchronous failover, replicas {LAG:g}s behind: {len(report.missing)} orders answered 202 lost, "
        f"{len(report.deposits['lost'])} deposits answered 200 lost, {len(report.lost_orders)} named by the topic audit"
    )
    print(summary)

    # What every role said at start: this database can lose acknowledged writes.
    said = (tmp_path / "api-orders.log").read_text()
    assert "primary with asynchronous standby(s) only" in said and "A FAILOVER CAN LOSE" in said

    assert report.missing, f"the failover lost nothing: the reproduction did not happen ({report.verdict()})"
    failing = _failing(report.audit)
    # The money checks see the loss only by chance: when the payments consumer had not committed its
    # offsets past the lost requests, it applies them again on the new primary, and the decisions of
    # orders the orders database lost show up (issue 22's run: they did not, and the audit passed).
    print(f"money checks failing: {sorted(MONEY_CHECKS & set(failing)) or 'none'}")
    assert "requested_orders_exist" in failing, report.audit
    named = {line.split()[1] for line in report.lost_orders}
    missing = {line.split()[1] for line in report.missing}
    assert named and named <= missing, (named, missing)

    # The repair: each lost order whose request is on the topic comes back, and the re-drive settles it.
    # setup.environ: the run's environment, with the event secrets run_chaos gave its roles.
    settings = Settings.from_env({**setup.environ, "HSEPAY_REDRIVE_AFTER": "0.5"})
    async with built(settings, registry.with_database(), relays=True, consumers=True) as system:
        kafka = settings.kafka
        payments, orders_db = system.engine("payments"), system.engine("orders")
        witness = TopicWitness(
            system["orders"].broker,
            kafka.orders_topic,
            kafka.payment_status_topic,
            verifier=history_verifier(settings),
        )
        await witness.mark()
        async with payments.connect() as p, orders_db.connect() as o:
            found = await witness.compare(p, o)
        async with orders_db.begin() as conn:
            restored = await restore_orders(
                conn, [(x.order_id, x.user_id, x.amount, x.requested_at) for x in found.repairable]
            )
        assert restored == len(found.repairable) > 0
        async with start_workers(system):
            await _until_settled(orders_db)
        witness = TopicWitness(
            system["orders"].broker,
            kafka.orders_topic,
            kafka.payment_status_topic,
            verifier=history_verifier(settings),
        )
        await witness.mark()
        async with payments.connect() as p, orders_db.connect() as o:
            audit = await check_invariants(p, o)
            after = await witness.compare(p, o)
    # What is left: only the losses held back as possible duplicates of a later order, named for a
    # person to decide (a decision made again for one of them is a debit without its order).
    held_back = {str(x.order_id) for x in found.lost_orders if x.suspected_duplicate_of}
    still = {c.name: c.violations for c in [*audit.checks, *after.checks] if not c.ok}
    for name, lines in still.items():
        if name == "conservation":
            assert held_back, still
            continue
        for line in lines:
            assert any(order_id in line for order_id in held_back), f"{name}: {line}"
    left = {name: len(lines) for name, lines in still.items()}
    print(f"{summary}; restored {restored} (held back {len(held_back)}), settled by the re-drive; left {left}")


async def _until_settled(orders_db: AsyncEngine) -> None:
    """Until no order is `created`: the restored ones, and those whose decision payments lost while
    the orders database kept them (the re-drive asks again for both)."""
    deadline = time.monotonic() + 90
    while True:
        async with orders_db.connect() as conn:
            waiting = (
                (await conn.execute(select(orders.c.id).where(orders.c.status == "created").limit(5))).scalars().all()
            )
        if not waiting:
            return
        assert time.monotonic() < deadline, f"orders still created: {waiting}"
        await asyncio.sleep(0.2)
