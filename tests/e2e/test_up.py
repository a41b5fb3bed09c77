"""`hsepay up`: one command serves both APIs and pays for a funded order within a second."""

from __future__ import annotations

import re
import signal
import time
import uuid

import httpx

from hsepay import embedded
from tests.e2e.conftest import free_port, running


def _final(client: httpx.Client, url: str, timeout: float) -> tuple[dict, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        order = client.get(url).json()
        if order["status"] != "created":
            return order, time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError(f"{url} still created after {timeout}s")


def test_up_pays_a_funded_order_and_stops_cleanly(hsepay_env, tmp_path):
    """With its own embedded broker (HSEPAY_KAFKA unset), as on a laptop: `up` says when it is ready,
    and the first order placed after that settles without waiting for consumer groups to form."""
    env = {k: v for k, v in hsepay_env.items() if not k.startswith("HSEPAY_KAFKA")}
    env["HSEPAY_DATA_DIR"] = str(tmp_path / "up-data")  # its broker, stopped below; the databases are configured
    pay, ords, gate = free_port(), free_port(), free_port()
    ready = [f"http://127.0.0.1:{pay}/health/ready", f"http://127.0.0.1:{ords}/health/ready"]
    args = ["up", "--payments-port", str(pay), "--orders-port", str(ords), "--gateway-port", str(gate)]
    try:
        _run_up(args, env, ready, pay, ords)
    finally:
        embedded.stop_broker(tmp_path / "up-data")


def _run_up(args, env, ready, pay, ords) -> None:
    spawned = time.time()
    with running(args, env, ready) as up:
        _wait_for_line(up, b"ready in ")
        _assert_ready_time_counts_from_the_start(up.seen[-1], time.time() - spawned)
        with httpx.Client(timeout=5) as client:
            user = str(uuid.uuid4())
            assert client.post(f"http://127.0.0.1:{pay}/accounts", json={"user_id": user}).status_code == 201
            client.post(f"http://127.0.0.1:{pay}/accounts/{user}/deposit", json={"amount": 1000})

            first = client.post(f"http://127.0.0.1:{ords}/orders", json={"user_id": user, "amount": 100}).json()
            order, took = _final(client, f"http://127.0.0.1:{ords}/order/{first['id']}", timeout=60)
            assert order["status"] == "success"
            print(f"first order after ready: final in {took * 1000:.0f} ms")

            second = client.post(f"http://127.0.0.1:{ords}/orders", json={"user_id": user, "amount": 100}).json()
            order, took = _final(client, f"http://127.0.0.1:{ords}/order/{second['id']}", timeout=10)
            assert order["status"] == "success"
            assert took < 1.0, f"a funded order took {took:.3f}s to settle on a warm system"

            unfunded = client.post(f"http://127.0.0.1:{ords}/orders", json={"user_id": user, "amount": 10_000}).json()
            order, _ = _final(client, f"http://127.0.0.1:{ords}/order/{unfunded['id']}", timeout=10)
            assert (order["status"], order["reason"]) == ("failed", "insufficient_funds")
            balance = client.get(f"http://127.0.0.1:{pay}/accounts/balance", params={"user_id": user}).json()
            assert balance["balance"] == 800

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        output = b"".join(up.seen) + up.stdout.read()
        assert b"stopped" in output
        assert b"AUTHENTICATION IS OFF" in output  # no HSEPAY_AUTH_SECRET: a loud banner


def _assert_ready_time_counts_from_the_start(line: bytes, wall: float) -> None:
    """`ready in Xs` is the time since the process started, as a user's clock reads it: it said 0.2 s
    after 5 s of wall time (it counted from when the engines were up). `wall` runs from before the
    spawn to after the line was read, which the test reads late by its polling of /health/ready (1.3 s
    at a load of 30), so only "most of the wall time" is asserted: on main it said 1.3 s of 10 s."""
    said = float(re.search(rb"ready in ([0-9.]+)s", line)[1])
    assert wall / 2 <= said <= wall + 0.05, (line, wall)


def _wait_for_line(proc, marker: bytes, timeout: float = 60.0) -> None:
    """Read the process's output until a line holds `marker` (kept in proc.seen for later checks)."""
    proc.seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        proc.seen.append(line)
        if marker in line:
            return
        assert line or proc.poll() is None, b"".join(proc.seen).decode()
    raise AssertionError(f"no {marker!r} line within {timeout}s: {b''.join(proc.seen).decode()}")
