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
from sqlalchemy import func, select, text

from hsepay import embedded
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments import operations as payments_ops
from hsepay.payments.tables import ledger_entries
from hsepay.relay.backlog import outbox_status
from hsepay.roles import start_workers
from hsepay.system import BrokerEndpoint
from tests.integration.conftest import wait_final
from tests.support import assert_audit_ok, end_offsets, open_account, place_orders, poll_until

pytestmark = pytest.mark.chaos


def _relay_processes(environ: dict[str, str], count: int, **overrides: str) -> list[subprocess.Popen]:
    env = {**os.environ, **environ, **overrides}
    return [subprocess.Popen([sys.executable, "-m", "hsepay.cli", "relay", "orders"], env=env) for _ in range(count)]


def _stop(processes: list[subprocess.Popen]) -> None:
    for proc in processes:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        proc.wait(timeout=20)


async def _active_relay_pid(orders_engine, timeout: float = 60.0, other_than: int | None = None) -> int:
    async def active() -> int | None:
        async with orders_engine.connect() as conn:
            holder = (await outbox_status(conn, orders_outbox))["active_relay"]
        pid = int(holder["application_name"].rsplit(":", 1)[1]) if holder else None
        return pid if pid is not None and pid != other_than else None

    return await poll_until(active, timeout=timeout, interval=0.1, what="an active relay")


async def _relay_sessions(orders_engine, pid: int) -> int:
    """Open lock sessions of the relay process `pid` (active or standing by)."""
    async with orders_engine.connect() as conn:
        return (
            await conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :name"),
                {"name": f"hsepay-relay-orders %:{pid}"},
            )
        ).scalar_one()


async def test_standby_relay_takes_over_after_kill_9(saga_environ, saga, payments_engine, orders_engine):
    relays = _relay_processes(saga_environ, 2)
    try:
        user = await open_account(payments_engine, 10_000)
        topic = saga.settings.kafka.orders_topic
        async with start_workers(saga.system("payments")), start_workers(saga.system("orders", relays=False)):
            first = await _active_relay_pid(orders_engine)
            assert first in {p.pid for p in relays}
            before = await place_orders(orders_engine, user, 10, topic, 100)
            placing = asyncio.create_task(place_orders(orders_engine, user, 10, topic, 100))
            await asyncio.sleep(0.05)
            os.kill(first, signal.SIGKILL)  # mid-flight: orders keep arriving
            after = await placing
            second = await _active_relay_pid(orders_engine, other_than=first)
            assert second in {p.pid for p in relays}
            final = await wait_final(orders_engine, before + after, timeout=60)
        assert {status for status, _ in final.values()} == {"success"}
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
        _stop(relays)


async def test_a_frozen_relay_loses_its_lock_and_publishes_nothing_after_the_takeover(
    saga_environ, saga, payments_engine, orders_engine
):
    """SIGSTOP the active relay: PostgreSQL ends its silent session after the lease, the standby
    takes over, and after SIGCONT the old relay stands by without publishing another message."""
    lease = 3.0
    relays = _relay_processes(saga_environ, 2, HSEPAY_RELAY_LEASE=str(lease))
    bootstrap = saga.settings.kafka.bootstrap_servers
    topic = saga.settings.kafka.orders_topic
    try:
        user = await open_account(payments_engine, 10_000)
        async with start_workers(saga.system("payments")), start_workers(saga.system("orders", relays=False)):
            frozen = await _active_relay_pid(orders_engine)
            await wait_final(orders_engine, await place_orders(orders_engine, user, 10, topic, 20))

            os.kill(frozen, signal.SIGSTOP)
            stopped_at = time.monotonic()
            while_frozen = await place_orders(orders_engine, user, 10, topic, 20)
            successor = await _active_relay_pid(orders_engine, timeout=60, other_than=frozen)
            takeover = time.monotonic() - stopped_at
            await wait_final(orders_engine, while_frozen, timeout=60)
            published = sum((await end_offsets(bootstrap, topic)).values())

            os.kill(frozen, signal.SIGCONT)
            # Back from the freeze, the old relay finds its session gone and stands by on a new one.
            await poll_until(lambda: _relay_sessions(orders_engine, frozen), timeout=30, what="the old relay back")
            assert await _active_relay_pid(orders_engine) == successor
            assert sum((await end_offsets(bootstrap, topic)).values()) == published
        assert takeover < lease + 5  # the lease, one standby interval, and a loaded box's slack
        await assert_audit_ok(payments_engine, orders_engine)
    finally:
        _stop(relays)


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


async def test_broker_restart_loses_messages_and_redrive_recovers(saga, private_broker, payments_engine, orders_engine):
    directory, address = private_broker
    port = int(address.rsplit(":", 1)[1])
    settings = saga.settings
    private = replace(
        saga.with_settings(
            # Tansu: no idempotent producers, one node.
            kafka=replace(settings.kafka, bootstrap_servers=address, idempotence=False, replication_factor=1),
            saga=replace(settings.saga, redrive_after=2.0, redrive_interval=0.5),
        ),
        broker=BrokerEndpoint(address, False, embedded=True),
    )
    topic = private.settings.kafka.orders_topic
    user = await open_account(payments_engine, 100_000)
    poor = await open_account(payments_engine, 5)
    async with start_workers(private.system("payments", "orders")):
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
