"""The embedded engines: found again by the next command, data kept across a restart."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import psycopg

from hsepay import embedded
from tests.e2e.conftest import free_port


def test_embedded_postgres_is_reused_and_keeps_data_across_a_restart(tmp_path):
    try:
        first = embedded.ensure_postgres(tmp_path)
        uri = embedded.ensure_databases(first, ["keep"])["keep"]
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (value int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        started = time.monotonic()
        assert embedded.ensure_postgres(tmp_path) == first  # found running, not started again
        assert time.monotonic() - started < 1.0

        assert embedded.stop_postgres(tmp_path) is True
        embedded.ensure_postgres(tmp_path)
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT value FROM kept").fetchone() == (42,)
    finally:
        embedded.stop_postgres(tmp_path)
    assert embedded.stop_postgres(tmp_path) is False


def test_embedded_broker_is_found_by_the_next_command_and_stops(tmp_path):
    try:
        address = embedded.ensure_broker(tmp_path, port=0)
        assert embedded.ensure_broker(tmp_path) == address
        assert embedded.find_broker(tmp_path) == address
    finally:
        assert embedded.stop_broker(tmp_path) is True
    assert embedded.find_broker(tmp_path) is None


def test_hsepay_broker_runs_in_the_foreground_and_refuses_a_second_one(tmp_path):
    port = free_port()
    env = {"HSEPAY_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "hsepay.cli", "broker", "--port", str(port)], env=env)
    try:
        deadline = time.monotonic() + 15
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "broker did not start"
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "hsepay.cli", "broker", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2
        assert "already runs" in second.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    assert embedded.find_broker(tmp_path) is None
