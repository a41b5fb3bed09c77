"""Stage 1 chaos (embedded engines): every role its own process, orders over HTTP, random kill -9 of
relays, consumers and APIs, a broker restart that loses every message, and a PostgreSQL restart.
Nothing lost, nothing debited twice, the audit clean."""

from __future__ import annotations

import pytest

from hsepay.chaos.faults import EmbeddedTansu, Fault, random_plan
from hsepay.chaos.run import ChaosSetup, run_chaos
from tests.chaos.reporting import record as _record

pytestmark = pytest.mark.chaos

ROLES = [
    "api-payments",
    "api-orders",
    "relay-payments-1",
    "relay-orders-1",
    "relay-payments-2",
    "relay-orders-2",
    "consume-payments",
    "consume-orders",
]


async def test_random_role_kills_a_broker_loss_and_a_postgres_restart(tmp_path, private_postgres, private_tansu):
    postgres, urls = private_postgres
    broker_dir, port, address = private_tansu
    setup = ChaosSetup(
        environ={
            "HSEPAY_DATA_DIR": str(tmp_path / "data"),
            "HSEPAY_PAYMENTS_DB": urls["payments"],
            "HSEPAY_ORDERS_DB": urls["orders"],
            "HSEPAY_KAFKA": address,
            "HSEPAY_KAFKA_PARTITIONS": "3",
            "HSEPAY_REDRIVE_AFTER": "3",
            "HSEPAY_REDRIVE_INTERVAL": "0.5",
            "HSEPAY_RELAY_STANDBY_INTERVAL": "0.2",
            "HSEPAY_MAX_BACKOFF": "1",
        },
        work_dir=tmp_path,
        broker=EmbeddedTansu(broker_dir, port),
        postgres=postgres,
    )
    seed = 11
    plan = random_plan(seed, 12.0, roles=ROLES, kinds=["kill-role"], count=6)
    plan += [Fault(5.0, "broker-kill", "1", down=1.0), Fault(9.0, "pg-restart", down=2.0)]
    report = await run_chaos(setup, seed=seed, orders=600, rate=50, users=40, plan=plan, settle_timeout=30)
    _record("embedded", report)
    assert report.passed, report.to_json()
    assert report.final == report.intended >= 600
    assert report.double_debits == 0
    assert len(report.faults) == 8
    assert all(code == 0 for code in report.role_exits.values()), report.role_exits
