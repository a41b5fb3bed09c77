"""/health/live and /health/ready: ready means every dependency and role of the process is."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
from litestar.testing import AsyncTestClient

from hsepay import embedded, migrate
from hsepay.api.app import create_payments_app
from hsepay.config import normalise_db_url
from hsepay.db import create_engine
from tests.e2e.conftest import free_port, running
from tests.support import poll_until


async def test_api_readiness_flips_when_its_database_stops_and_comes_back(tmp_path):
    """A private embedded PostgreSQL (the shared test server is not disturbed) is stopped under a live API."""
    server = await asyncio.to_thread(embedded.ensure_postgres, tmp_path)
    try:
        created = await asyncio.to_thread(embedded.ensure_databases, server, ["payments"])
        url = normalise_db_url(created["payments"], "HSEPAY_PAYMENTS_DB")
        await asyncio.to_thread(migrate.upgrade, "payments", url)
        engine = create_engine(url, pool_size=2)
        try:
            async with AsyncTestClient(app=create_payments_app(engine)) as client:
                ready = await client.get("/health/ready")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"]["database.payments"]["ready"] is True

                await asyncio.to_thread(embedded.stop_postgres, tmp_path)

                async def unready():
                    response = await client.get("/health/ready")
                    return response if response.status_code == 503 else None

                down = await poll_until(unready, timeout=20, what="/health/ready to say 503")
                assert down.json()["status"] == "unavailable"
                assert down.json()["checks"]["database.payments"]["ready"] is False
                assert (await client.get("/health/live")).status_code == 200  # alive, just not ready
                metrics = (await client.get("/metrics")).text
                assert 'hsepay_database_up{service="payments"} 0.0' in metrics

                await asyncio.to_thread(embedded.ensure_postgres, tmp_path)

                async def ready_again():
                    return (await client.get("/health/ready")).status_code == 200

                await poll_until(ready_again, timeout=20, what="/health/ready to recover")
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(embedded.stop_postgres, tmp_path)


def test_worker_ports_are_live_at_once_and_ready_when_their_role_has_started(saga_environ):
    """`hsepay relay` and `hsepay consume` with --metrics-port: ready once the relay is active or
    standing by and the consumer holds its partitions, with each check in the answer."""
    relay_port, consumer_port = free_port(), free_port()
    relay_ready = f"http://127.0.0.1:{relay_port}/health/ready"
    consumer_ready = f"http://127.0.0.1:{consumer_port}/health/ready"
    with (
        running(["relay", "orders", "--metrics-port", str(relay_port)], saga_environ, [relay_ready]),
        running(["consume", "orders", "--metrics-port", str(consumer_port)], saga_environ, [consumer_ready]),
    ):
        relay = httpx.get(relay_ready).json()["checks"]
        assert relay["relay.orders"]["state"] in ("active", "standby")
        assert relay["database.orders"]["ready"] and relay["broker"]["ready"]
        consumer = httpx.get(consumer_ready).json()["checks"]
        assert consumer["consumer.orders"]["joined"] is True
        assert httpx.get(f"http://127.0.0.1:{consumer_port}/health/live").json() == {"status": "ok"}
        metrics = httpx.get(f"http://127.0.0.1:{relay_port}/metrics").text
        assert 'hsepay_relay_active{service="orders"}' in metrics


def test_metrics_port_in_use_is_one_line_and_exit_2(saga_environ):
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hsepay.cli", "relay", "orders", "--metrics-port", str(port)],
            env=saga_environ,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert "--metrics-port" in result.stderr and "Traceback" not in result.stderr
