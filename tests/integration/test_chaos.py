"""Faults mid-flight: the active relay killed with SIGKILL, the in-memory broker restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from hsepay import embedded
from hsepay.bootstrap import BrokerEndpoint, Runtime
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments import operations as payments_ops
from hsepay.payments.tables import ledger_entries
from hsepay.relay.backlog import outbox_status
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final
from tests.support import assert_audit_ok, open_account, place_orders, specs

pytestmark = pytest.mark.chaos


def _worker_env(rt: Runtime) -> dict[str, str]:
    kafka = rt.settings.kafka
    return {
        **os.environ,
        "HSEPAY_PAYMENTS_DB": rt.db_urls["payments"],
        "HSEPAY_ORDERS_DB": rt.db_urls["orders"],
        "HSEPAY_KAFKA": kafka.bootstrap_servers,
        "HSEPAY_ORDERS_TOPIC": kafka.orders_topic,
        "HSEPAY_PAYMENT_STATUS_TOPIC": kafka.payment_status_topic,
        "HSEPAY_GROUP_PREFIX": kafka.group_prefix,
        "HSEPAY_KAFKA_PARTITIONS": str(kafka.partitions),
        "HSEPAY_KAFKA_IDEMPOTENCE": "true" if kafka.idempotence else "false",
        "HSEPAY_DATA_DIR": str(rt.settings.data_dir),
    }


async def _active_relay_pid(orders_engine, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with orders_engine.connect() as conn:
            active = (await outbox_status(conn, orders_outbox))["active_relay"]
        if active:
            return int(active["application_name"].rsplit(":", 1)[1])
        await asyncio.sleep(0.1)
    raise AssertionError("no relay became active")


async def test_standby_relay_takes_over_after_kill_9(runtime, payments_engine, orders_engine):
    env = _worker_env(runtime)
    relays = [subprocess.Popen([sys.executable, "-m", "hsepay.cli", "relay", "orders"], env=env) for _ in range(2)]
    try:
        user = await open_account(payments_engine, 10_000)
        topic = runtime.settings.kafka.orders_topic
        async with start_workers(runtime, specs("payments")), start_workers(runtime, specs("orders"), relay=False):
            first = await _active_relay_pid(orders_engine)
            assert first in {p.pid for p in relays}
            before = await place_orders(orders_engine, user, 10, topic, 100)
            placing = asyncio.create_task(place_orders(orders_engine, user, 10, topic, 100))
            await asyncio.sleep(0.05)
            os.kill(first, signal.SIGKILL)  # mid-flight: orders keep arriving
            after = await placing
            took_over_at = time.monotonic()
            second = await _active_relay_pid(orders_engine)
            assert second != first and second in {p.pid for p in relays}
            final = await wait_final(orders_engine, before + after, timeout=60)
            takeover = time.monotonic() - took_over_at
        assert {status for status, _ in final.values()} == {"success"}
        assert takeover < 60
        async with payments_engine.connect() as conn:
            debits = (
                await conn.execute(
                    select(func.count()).select_from(ledger_entries).where(ledger_entries.c.kind == "debit")
                )
            ).scalar()
            balance = (await payments_ops.get_account(conn, user)).balance
        assert debits == 200
        assert balance == 10_000 - 200 * 10
        await assert_audit_ok(payments_engine, orders_engine)
    finally:
        for proc in relays:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in relays:
            proc.wait(timeout=20)


@pytest.fixture
def private_broker(tmp_path):
    """A broker of this test's own, since the test kills it."""
    address = embedded.ensure_broker(tmp_path, port=0)
    yield tmp_path, address
    embedded.stop_broker(tmp_path)


def _kill_broker(directory) -> None:
    state = json.loads((directory / "broker.json").read_text())
    os.kill(state["pid"], signal.SIGKILL)
    (directory / "broker.json").unlink()


async def test_broker_restart_loses_messages_and_redrive_recovers(
    runtime, private_broker, payments_engine, orders_engine
):
    directory, address = private_broker
    port = int(address.rsplit(":", 1)[1])
    settings = runtime.settings
    rt = Runtime(
        settings=replace(
            settings,
            # Tansu: no idempotent producers, one node.
            kafka=replace(settings.kafka, bootstrap_servers=address, idempotence=False, replication_factor=1),
            saga=replace(settings.saga, redrive_after=2.0, redrive_interval=0.5),
        ),
        db_urls=runtime.db_urls,
        engines=runtime.engines,
        broker=BrokerEndpoint(address, False, embedded=True),
    )
    topic = rt.settings.kafka.orders_topic
    user = await open_account(payments_engine, 100_000)
    poor = await open_account(payments_engine, 5)
    async with start_workers(rt, specs("payments", "orders")):
        settled = await place_orders(orders_engine, user, 7, topic, 30)
        await wait_final(orders_engine, settled, timeout=30)

        in_flight = await place_orders(orders_engine, user, 7, topic, 30)
        _kill_broker(directory)  # memory storage: every topic, message and offset is gone
        while_down = await place_orders(orders_engine, user, 7, topic, 30)
        refused = await place_orders(orders_engine, poor, 7, topic, 3)
        await asyncio.sleep(1.0)
        assert embedded.ensure_broker(directory, port=port) == f"127.0.0.1:{port}"

        final = await wait_final(orders_engine, settled + in_flight + while_down + refused, timeout=90)

    for order_id in settled + in_flight + while_down:
        assert final[order_id] == ("success", None)
    for order_id in refused:
        assert final[order_id] == ("failed", "insufficient_funds")
    async with payments_engine.connect() as conn:
        assert (await payments_ops.get_account(conn, user)).balance == 100_000 - 90 * 7
        assert (await payments_ops.get_account(conn, poor)).balance == 5
    await assert_audit_ok(payments_engine, orders_engine)
