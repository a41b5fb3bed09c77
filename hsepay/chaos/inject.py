"""Injecting a chaos run's faults, in order, through the adapters of the parts they break."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from hsepay.chaos.failover import FAILOVER_KINDS, DatabaseCluster, inject_failover
from hsepay.chaos.faults import NET_KINDS, BrokerControl, Fault, PostgresControl
from hsepay.chaos.network import NetworkControl
from hsepay.chaos.report import FaultRecord
from hsepay.chaos.roles import RoleSet

__all__ = ["AFTER_FAULTS", "Adapters", "inject_plan"]

log = logging.getLogger("hsepay.chaos.run")

AFTER_FAULTS = 5.0


class Adapters(Protocol):
    """What breaks what: a run's setup names an adapter per part it may break (None: not this run)."""

    broker: BrokerControl | None
    postgres: PostgresControl | None
    cluster: DatabaseCluster | None
    network: NetworkControl | None


async def _inject(fault: Fault, setup: Adapters, roles: RoleSet, topics: dict[str, str], record: FaultRecord) -> None:
    record.started = time.time()
    if fault.kind == "kill-role":
        role = roles.roles[fault.target]
        role.kill9()
        await asyncio.sleep(fault.down)
        role.start()
        record.returned = time.time()
    elif fault.kind == "broker-kill":
        broker = _need(setup.broker, fault)
        if fault.target.startswith("leader:"):
            leaders = sorted(await broker.leaders(topics.get(fault.target[7:], fault.target[7:])))
            node = leaders[0] if leaders else broker.nodes()[0]
        else:
            node = int(fault.target or broker.nodes()[0])
        record.detail = f"node {node}"
        await broker.kill(node)
        await asyncio.sleep(fault.down)
        await broker.start([node])
        record.returned = time.time()
    elif fault.kind == "broker-rolling":
        broker = _need(setup.broker, fault)
        for node in broker.nodes():
            await broker.term(node)
            await broker.start([node])
            await broker.wait_healthy(180)
        record.returned = time.time()
    elif fault.kind == "broker-restart-all":
        broker = _need(setup.broker, fault)
        await broker.stop_all()  # type: ignore[attr-defined]
        await broker.start_all()  # type: ignore[attr-defined]
        await broker.wait_healthy(180)
        record.returned = time.time()
    elif fault.kind in FAILOVER_KINDS:
        await inject_failover(fault, _need(setup.cluster, fault), record)
    elif fault.kind in NET_KINDS:
        network = _need(setup.network, fault)
        await network.break_link(fault.kind, fault.target)
        await asyncio.sleep(fault.down)
        await network.heal(fault.kind, fault.target)
        record.returned = time.time()
    elif fault.kind == "pg-restart":
        postgres = _need(setup.postgres, fault)
        await postgres.stop()
        await asyncio.sleep(fault.down)
        await postgres.start()
        record.returned = time.time()
    else:
        raise ValueError(f"unknown fault kind {fault.kind!r}")
    record.ended = time.time()


def _need(part, fault: Fault):
    if part is None:
        raise ValueError(f"{fault.kind} needs a control adapter for it")
    return part


async def inject_plan(
    plan: Sequence[Fault], setup: Adapters, roles: RoleSet, topics: dict[str, str], begin: float, over: asyncio.Event
) -> list[FaultRecord]:
    """Inject the plan in order (a fault starts once the one before it is over), then keep the load
    going AFTER_FAULTS seconds more, so that recovery from the last fault is seen under load."""
    records = []
    try:
        for fault in sorted(plan, key=lambda f: f.at):
            await asyncio.sleep(max(0.0, begin + fault.at - time.time()))
            record = FaultRecord(fault)
            log.warning("chaos: %s", fault.label())
            await _inject(fault, setup, roles, topics, record)
            records.append(record)
        await asyncio.sleep(AFTER_FAULTS)
    finally:
        over.set()
    return records
