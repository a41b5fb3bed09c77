"""`hsepay status`: backlog, throughput, lag, quarantine and errors per service, and the processes' view."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid

import pytest

from hsepay.config import get_settings
from tests.cli.helpers import invoke, ok
from tests.e2e.conftest import free_port, running


@pytest.fixture
def cli_env(saga_environ, monkeypatch):
    for variable, value in saga_environ.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield saga_environ
    get_settings.cache_clear()


def test_status_reports_each_service_and_each_process(cli_env, payments_engine, orders_engine):
    user = str(uuid.uuid4())
    ok("order", "create", user, "100")
    report = json.loads(ok("status", "--json").stdout)
    orders = report["services"]["orders"]
    assert orders["outbox"]["pending"] == 1 and orders["outbox"]["oldest_pending_age_s"] >= 0
    assert orders["inbox"]["quarantined"] == 0 and orders["database_error"] is None
    assert {"published_per_s", "applied_per_s", "lag", "lag_total", "broker_error"} <= orders.keys()
    assert report["processes"] == []

    port = free_port()
    with running(["relay", "orders", "--metrics-port", str(port)], cli_env, [f"http://127.0.0.1:{port}/health/ready"]):
        target = f"http://127.0.0.1:{port}"

        def published() -> dict:
            report = json.loads(ok("status", "orders", "--json", "--target", target).stdout)
            return report if report["services"]["orders"]["outbox"]["pending"] == 0 else {}

        for _ in range(100):
            if report := published():
                break
        assert report, "the relay did not publish the order"
        process = report["processes"][0]
        assert process["ready"] is True and process["services"]["orders"]["relay_active"] == 1
        assert report["services"]["orders"]["published_per_s"] > 0
        assert report["services"]["orders"]["outbox"]["active_relay"] is not None

        table = ok("status", "orders", "--target", target).stdout
        assert "outbox pending" in table and "orders relay active" in table

    gone = json.loads(ok("status", "orders", "--json", "--target", target).stdout)
    assert gone["processes"][0]["ready"] is False and gone["processes"][0]["error"]
    assert any(e["where"] == target for e in gone["errors"])


def test_status_refuses_an_unknown_service(cli_env):
    assert invoke("status", "nope").exit_code == 2


def test_status_watch_streams_json_until_interrupted(cli_env):
    proc = subprocess.Popen(
        [sys.executable, "-m", "hsepay.cli", "status", "orders", "--watch", "--json", "--interval", "0.2"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        assert all("orders" in line["services"] for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
