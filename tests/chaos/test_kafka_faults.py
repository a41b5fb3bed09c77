"""Faults of a real Apache Kafka cluster (CI stage 2: 3 nodes, KRaft, from .ci/kafka) under order load
over HTTP, every hsepay role its own process: issue 11's runs a-e. Each run ends with every order
final within 30 s of the last fault, nothing lost, nothing debited twice, and a clean audit.

They need the cluster's control script and work directory (HSEPAY_TEST_KRAFT_CTL,
HSEPAY_TEST_KRAFT_WORKDIR, and HSEPAY_TEST_KAFKA for its bootstrap servers); `.ci/run` sets them and
HSEPAY_TEST_REQUIRE_FAULTS=1, which turns a skip into a failure there. The recovery figures of each
run go to HSEPAY_CHAOS_REPORT_DIR when it is set (docs/RELIABILITY.md quotes them); speed is
reported, not asserted.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from hsepay.chaos.faults import Fault, KraftScripts, random_plan
from hsepay.chaos.run import ChaosSetup, run_chaos
from tests.chaos.reporting import record as _record
from tests.chaos.test_chaos_embedded import ROLES

pytestmark = pytest.mark.chaos

CTL = os.environ.get("HSEPAY_TEST_KRAFT_CTL")
WORKDIR = os.environ.get("HSEPAY_TEST_KRAFT_WORKDIR")
BOOTSTRAP = os.environ.get("HSEPAY_TEST_KAFKA")

if not (CTL and WORKDIR and BOOTSTRAP):
    if os.environ.get("HSEPAY_TEST_REQUIRE_FAULTS"):
        raise RuntimeError("HSEPAY_TEST_REQUIRE_FAULTS is set but the Kafka cluster variables are not")
    pytestmark = [
        pytest.mark.chaos,
        pytest.mark.skip(reason="needs an Apache Kafka cluster from .ci/kafka (CI stage 2 runs these)"),
    ]


@pytest.fixture
async def cluster():
    control = KraftScripts(Path(CTL), Path(WORKDIR))
    await control.wait_healthy(180)
    yield control
    # Leave the cluster as the next run expects it: every node up, nothing under-replicated.
    stopped = [n for n in control.nodes() if n not in await control.running()]
    if stopped:
        await control.start(stopped)
    await control.wait_healthy(180)


def _setup(tmp_path, private_postgres, cluster, **environ) -> ChaosSetup:
    postgres, urls = private_postgres
    suffix = uuid.uuid4().hex[:8]
    return ChaosSetup(
        environ={
            "HSEPAY_DATA_DIR": str(tmp_path / "data"),
            "HSEPAY_PAYMENTS_DB": urls["payments"],
            "HSEPAY_ORDERS_DB": urls["orders"],
            "HSEPAY_KAFKA": BOOTSTRAP,
            "HSEPAY_KAFKA_PARTITIONS": "6",
            "HSEPAY_ORDERS_TOPIC": f"faults-{suffix}-orders",
            "HSEPAY_PAYMENT_STATUS_TOPIC": f"faults-{suffix}-payment-status",
            "HSEPAY_GROUP_PREFIX": f"faults-{suffix}",
            "HSEPAY_REDRIVE_AFTER": "10",
            "HSEPAY_REDRIVE_INTERVAL": "1",
            "HSEPAY_MAX_BACKOFF": "2",
            "HSEPAY_RELAY_STANDBY_INTERVAL": "0.5",
            **environ,
        },
        work_dir=tmp_path,
        broker=cluster,
        postgres=postgres,
    )


def _assert_held(report) -> None:
    assert report.passed, report.verdict()
    assert report.final == report.intended
    assert report.double_debits == 0
    assert report.drained_after_last_fault_s is not None and report.drained_after_last_fault_s <= 30


@pytest.mark.parametrize("replication", ["3", "1"])
async def test_a_broker_leading_each_topic_killed_and_back_15s_later(tmp_path, private_postgres, cluster, replication):
    """a. kill -9 of the node leading `orders` partitions, back 15 s later; then the same for
    `payment-status`. With replication factor 1 their partitions are offline until it returns.
    The load (10 orders/s) goes on until 5 s after the last fault."""
    setup = _setup(tmp_path, private_postgres, cluster, HSEPAY_KAFKA_REPLICATION=replication)
    plan = [
        Fault(5.0, "broker-kill", "leader:orders", down=15.0),
        Fault(8.0, "broker-kill", "leader:payment-status", down=15.0),
    ]
    report = await run_chaos(setup, seed=31, orders=200, rate=10, users=40, plan=plan)
    _record(f"broker-kill-rf{replication}", report)
    _assert_held(report)


async def test_a_rolling_restart_of_every_broker(tmp_path, private_postgres, cluster):
    """b. SIGTERM each node in turn, start it, wait until nothing is under-replicated, the next."""
    setup = _setup(tmp_path, private_postgres, cluster)
    report = await run_chaos(setup, seed=32, orders=200, rate=10, users=40, plan=[Fault(3.0, "broker-rolling")])
    _record("broker-rolling", report)
    _assert_held(report)


async def test_a_full_cluster_stop_and_start(tmp_path, private_postgres, cluster):
    """c. Every node stopped, then started on its data: nothing acknowledged is lost, and consumers
    resume from their committed offsets."""
    setup = _setup(tmp_path, private_postgres, cluster)
    report = await run_chaos(setup, seed=33, orders=200, rate=10, users=40, plan=[Fault(5.0, "broker-restart-all")])
    _record("broker-restart-all", report)
    _assert_held(report)


async def test_a_postgres_restart_mid_load(tmp_path, private_postgres, cluster):
    """d. The APIs answer 503 while PostgreSQL is down (never 500, never a hang), workers resume."""
    setup = _setup(tmp_path, private_postgres, cluster)
    report = await run_chaos(setup, seed=34, orders=300, rate=20, users=40, plan=[Fault(6.0, "pg-restart", down=5.0)])
    _record("pg-restart", report)
    _assert_held(report)
    assert report.load.statuses.get(503, 0) + sum(report.load.transport_errors.values()) > 0, (
        "the database restart was not felt by the API: the fault did not happen"
    )


async def test_random_kill_9_of_hsepay_roles(tmp_path, private_postgres, cluster):
    """e. Random kill -9 of relays, consumers and APIs, as stage 1 does on the embedded broker."""
    setup = _setup(tmp_path, private_postgres, cluster)
    plan = random_plan(35, 25.0, roles=ROLES, kinds=["kill-role"], count=8)
    report = await run_chaos(setup, seed=35, orders=500, rate=20, users=40, plan=plan)
    _record("kill-roles", report)
    _assert_held(report)


async def test_a_consumer_killed_and_restarted_takes_its_partitions_back_at_once(tmp_path, private_postgres, cluster):
    """f. Static membership (issue 22, item 5): each consumer killed with kill -9 and started again
    0.5 s later holds its partitions again within 2 s of being up (before: the group's session
    timeout, 10 s, restarted by each rejoin; 20.1 s in CI). Checked here on Apache Kafka: Tansu
    accepts group.instance.id but hands the partitions back only after its own rebalance (8 s)."""
    setup = _setup(tmp_path, private_postgres, cluster)
    plan = [
        Fault(5.0, "kill-role", "consume-orders", down=0.5),
        Fault(15.0, "kill-role", "consume-payments", down=0.5),
    ]
    report = await run_chaos(setup, seed=36, orders=400, rate=20, users=40, plan=plan)
    _record("consumer-restart", report)
    _assert_held(report)
    for record in report.faults:
        figures = record.figures
        assert "rejoin_s" in figures, (record.fault.label(), figures)
        assert figures["rejoin_s"] <= 2.0, (record.fault.label(), figures)
