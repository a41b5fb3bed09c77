"""Failover faults of a highly available PostgreSQL (Patroni): switchover, kill -9 of the leader
node, loss of the DCS quorum. The cluster is driven through a `DatabaseCluster` adapter (the CI
stage's is tests/ha/cluster.py: 3 Patroni nodes on etcd, optionally behind HAProxy).

Each fault records when the broken part was back as the moment a new primary accepts writes
(Patroni's REST API says so), so that a run's "after return" figure is the time orders took to
settle again after the new primary, the target of DESIGN §9.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from hsepay.chaos.faults import Fault
from hsepay.chaos.report import FaultRecord

__all__ = ["FAILOVER_KINDS", "DatabaseCluster", "inject_failover"]

log = logging.getLogger(__name__)

FAILOVER_KINDS = (
    "pg-switchover",  # a planned switchover to a synchronous standby
    "pg-kill-leader",  # kill -9 of the leader node (Patroni and its PostgreSQL); back as a replica after `down`
    "dcs-quorum-loss",  # the DCS (etcd) loses its quorum for `down` seconds: no leader at all
)

NEW_PRIMARY_TIMEOUT = 120.0


class DatabaseCluster(Protocol):
    name: str

    async def leader(self) -> str | None:
        """The member that is a writable primary now, or None."""
        ...

    async def switchover(self) -> str:
        """Ask for the primary role to go to another member; return it once the switchover is done."""
        ...

    async def kill_leader(self) -> str:
        """kill -9 the leader's Patroni and PostgreSQL; return its name."""
        ...

    async def start_member(self, name: str) -> None:
        """Start a stopped member again; return once it streams from the leader as a replica."""
        ...

    async def break_quorum(self) -> None: ...

    async def restore_quorum(self) -> None: ...

    async def wait_writable(self, timeout: float, *, other_than: str | None = None) -> str:
        """The leader, once a member (not `other_than`) is a writable primary."""
        ...

    async def wait_healthy(self, timeout: float) -> None:
        """Until every member is back and the cluster could fail over again without loss."""
        ...


async def inject_failover(fault: Fault, cluster: DatabaseCluster, record: FaultRecord) -> None:
    """Break the cluster as `fault` says; `record.returned` is when a primary took writes again."""
    if fault.kind == "pg-switchover":
        old = await cluster.leader()
        # Patroni answers the request only once the old primary has shut down and come back as a
        # replica: the new primary is watched for meanwhile, so `returned` is when it took writes.
        switching = asyncio.create_task(cluster.switchover())
        try:
            new = await cluster.wait_writable(NEW_PRIMARY_TIMEOUT, other_than=old)
            record.returned = time.time()
        finally:
            await switching
        record.detail = f"{old} -> {new}"
        await cluster.wait_healthy(NEW_PRIMARY_TIMEOUT)
    elif fault.kind == "pg-kill-leader":
        old = await cluster.kill_leader()
        new = await cluster.wait_writable(NEW_PRIMARY_TIMEOUT, other_than=old)
        record.returned = time.time()
        log.warning("chaos: %s leads after the kill of %s (%.1fs)", new, old, record.returned - record.started)
        await asyncio.sleep(fault.down)
        await cluster.start_member(old)
        await cluster.wait_healthy(NEW_PRIMARY_TIMEOUT)
        record.detail = f"{old} killed, {new} leads; {old} back as a replica at +{time.time() - record.started:.1f}s"
    elif fault.kind == "dcs-quorum-loss":
        await cluster.break_quorum()
        await asyncio.sleep(fault.down)
        await cluster.restore_quorum()
        new = await cluster.wait_writable(NEW_PRIMARY_TIMEOUT)
        record.returned = time.time()
        record.detail = f"quorum back at +{fault.down:g}s, {new} leads"
        await cluster.wait_healthy(NEW_PRIMARY_TIMEOUT)
    else:
        raise ValueError(f"unknown failover fault {fault.kind!r}")
