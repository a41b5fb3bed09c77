"""/metrics: every metric of the catalog is exported, and the numbers move when an order goes through."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx

from hsepay.observability import catalog
from hsepay.roles import start_workers
from tests.e2e.conftest import free_port
from tests.ops.helpers import names, value
from tests.support import poll_until


async def _metrics(client) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def test_metric_names_present_and_moving_after_an_order(saga, apis):
    payments, orders = apis
    user = str(uuid.uuid4())
    assert (await payments.post("/accounts", json={"user_id": user})).status_code == 201
    assert (await payments.post(f"/accounts/{user}/deposit", json={"amount": 500})).status_code == 200
    before = await _metrics(orders)
    accepted = (await orders.post("/orders", json={"user_id": user, "amount": 120})).json()

    async def backlog_seen() -> bool:
        return value(await _metrics(orders), "hsepay_outbox_pending_rows", service="orders") == 1

    await poll_until(backlog_seen, timeout=10, what="the orders outbox backlog gauge to show the new order")

    async with start_workers(saga.system("payments", "orders")):

        async def settled_and_counted() -> str | None:
            order = (await orders.get(f"/orders/{accepted['id']}")).json()
            text = await _metrics(orders)
            counted = value(text, "hsepay_saga_duration_seconds_count", outcome="success") > value(
                before, "hsepay_saga_duration_seconds_count", outcome="success"
            )
            # The consumer adds to its counts after its transaction commits, the saga histogram on the commit.
            applied = all(value(text, "hsepay_inbox_processed_total", service=s) == 1 for s in ("payments", "orders"))
            return text if order["status"] == "success" and counted and applied else None

        after = await poll_until(settled_and_counted, timeout=60, what="the order to settle and be counted")

        async def lag_measured() -> str | None:
            text = await _metrics(orders)
            return text if "hsepay_consumer_lag_messages" in names(text) else None

        after = await poll_until(lag_measured, timeout=10, what="consumer lag per partition")

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("hsepay_http_requests_total", service="orders", method="POST", route="/orders", status="202") == 1
    assert moved("hsepay_http_request_duration_seconds_count", service="orders", route="/orders") == 1
    assert moved("hsepay_saga_duration_seconds_count", outcome="success") == 1
    assert value(after, "hsepay_outbox_published_total", service="orders") == 1
    assert value(after, "hsepay_outbox_published_total", service="payments") == 1
    assert value(after, "hsepay_inbox_processed_total", service="payments") == 1
    assert value(after, "hsepay_inbox_processed_total", service="orders") == 1
    assert value(after, "hsepay_outbox_pending_rows", service="orders") == 0
    assert value(after, "hsepay_relay_active", service="orders") == 1
    assert value(after, "hsepay_consumer_joined", service="payments") == 1
    assert value(after, "hsepay_database_up", service="orders") == 1
    assert value(after, "hsepay_broker_up") == 1

    only_on_a_gateway = {"hsepay_gateway_upstream_failures_total"}
    missing = catalog.exported_names() - only_on_a_gateway - names(after)
    assert not missing, f"not exported: {sorted(missing)}"
    assert "process_resident_memory_bytes" in names(after)


def test_several_processes_share_counters_through_the_multiprocess_directory(hsepay_env, tmp_path):
    """Two API processes of one service (as uvicorn --workers would run them) with one
    PROMETHEUS_MULTIPROC_DIR: a scrape of either counts the requests both answered."""
    env = {**hsepay_env, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    (tmp_path / "prom").mkdir()
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hsepay.cli", "serve", "payments", "--port", str(port), "--insecure-no-auth"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 60
        for port in ports:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "API processes did not start"
                time.sleep(0.05)
        for port, count in zip(ports, (3, 4), strict=True):
            for _ in range(count):
                assert (
                    httpx.get(f"http://127.0.0.1:{port}/accounts/balance", params={"user_id": "x"}).status_code == 400
                )
        for port in ports:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert value(text, "hsepay_http_requests_total", route="/accounts/balance", status="400") == 7
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            proc.wait(timeout=30)
    assert os.listdir(tmp_path / "prom"), "the processes wrote their counters to the shared directory"
