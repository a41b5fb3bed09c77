"""`hsepay up`: one command serves both APIs and pays for a funded order within a second."""

from __future__ import annotations

import signal
import time
import uuid

import httpx

from tests.e2e.conftest import free_port, running


def _final(client: httpx.Client, url: str, timeout: float) -> tuple[dict, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        order = client.get(url).json()
        if order["status"] != "created":
            return order, time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError(f"{url} still created after {timeout}s")


def test_up_pays_a_funded_order_and_stops_cleanly(hsepay_env, broker):
    env = {**hsepay_env, "HSEPAY_KAFKA": broker, "HSEPAY_KAFKA_IDEMPOTENCE": "false"}
    pay, ords, gate = free_port(), free_port(), free_port()
    ready = [f"http://127.0.0.1:{pay}/health/ready", f"http://127.0.0.1:{ords}/health/ready"]
    args = ["up", "--payments-port", str(pay), "--orders-port", str(ords), "--gateway-port", str(gate)]
    with running(args, env, ready) as up:
        with httpx.Client(timeout=5) as client:
            user = str(uuid.uuid4())
            assert client.post(f"http://127.0.0.1:{pay}/accounts", json={"user_id": user}).status_code == 201
            client.post(f"http://127.0.0.1:{pay}/accounts/{user}/deposit", json={"amount": 1000})

            # The first order also waits for consumer groups to form; later ones show the latency.
            first = client.post(f"http://127.0.0.1:{ords}/orders", json={"user_id": user, "amount": 100}).json()
            order, _ = _final(client, f"http://127.0.0.1:{ords}/order/{first['id']}", timeout=60)
            assert order["status"] == "success"

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
        output = up.stdout.read()
        assert b"stopped" in output
        assert b"AUTHENTICATION IS OFF" in output  # no HSEPAY_AUTH_SECRET: a loud banner
