"""`hsepay status`: backlog, throughput, lag, quarantine and errors per service, and the processes' view."""

from __future__ import annotations

import http.server
import json
import signal
import subprocess
import sys
import threading
import time
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
    # The embedded server streams to no standby: nothing to fail over to, nothing acknowledged at risk there.
    assert orders["database"]["kind"] == "none" and orders["database"]["can_lose_acknowledged_writes"] is False

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
        assert "outbox pending" in table and "orders relay active" in table and "replication" in table

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


class _HeldTarget(http.server.ThreadingHTTPServer):
    """A process's metrics port that answers at once until `hold` is set, then only after `release`."""

    def __init__(self) -> None:
        self.hold, self.asked, self.release = threading.Event(), threading.Event(), threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:  # noqa: N802
                held = self.hold.is_set()
                if held:
                    self.asked.set()
                    self.release.wait(30)
                body = b'{"status": "ok", "checks": {"held": %d}}' % held if handler.path == "/health/ready" else b""
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_ctrl_c_of_watch_ends_after_the_snapshot_in_hand_without_a_word_on_stderr(cli_env):
    """Ctrl-C used to cancel a snapshot halfway (a broker client cancelled while closing logged a
    warning); now the snapshot in hand completes, is printed, and the command ends quietly."""
    target = _HeldTarget()
    threading.Thread(target=target.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{target.server_address[1]}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hsepay.cli",
            "status",
            "orders",
            "--watch",
            "--json",
            "--interval",
            "0.2",
            "--target",
            url,
        ],
        env={**cli_env, "HSEPAY_LOG_FORMAT": "console"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert json.loads(proc.stdout.readline())["processes"][0]["ready"] is True
        target.hold.set()
        assert target.asked.wait(30), "no snapshot asked the target again"
        proc.send_signal(signal.SIGINT)  # in the middle of a snapshot
        time.sleep(0.5)
        target.release.set()
        out, err = proc.communicate(timeout=60)
    finally:
        target.release.set()
        proc.kill()
        target.shutdown()
    assert proc.returncode == 0 and err == "", err
    last = json.loads(out.splitlines()[-1])
    assert last["processes"][0]["checks"] == {"held": 1}, "the snapshot in hand when Ctrl-C came was dropped"
