"""`hsepay serve` answers the six requests of the seed's Postman run with the JSON of DESIGN §3 (auth off,
as the seed's clients send no token), and enforces bearer tokens when HSEPAY_AUTH_SECRET is set."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import httpx

from tests.e2e.conftest import free_port, running


def test_seed_postman_run_against_served_apis(hsepay_env):
    pay, ords = free_port(), free_port()
    with (
        running(
            ["serve", "payments", "--port", str(pay), "--insecure-no-auth"],
            hsepay_env,
            [f"http://127.0.0.1:{pay}/health/ready"],
        ) as payments,
        running(
            ["serve", "orders", "--port", str(ords), "--insecure-no-auth"],
            hsepay_env,
            [f"http://127.0.0.1:{ords}/health/ready"],
        ) as orders,
    ):
        p, o = f"http://127.0.0.1:{pay}", f"http://127.0.0.1:{ords}"
        user = str(uuid.uuid4())

        created = httpx.post(f"{p}/accounts", json={"user_id": user})
        assert created.status_code == 201
        assert created.json()["message"] == "Account created" and created.json()["balance"] == 0

        deposit = httpx.post(f"{p}/accounts/{user}/deposit", json={"amount": 500, "user_id": user})
        assert deposit.status_code == 200
        assert deposit.json()["message"] == "Balance refilled" and deposit.json()["balance"] == 500

        balance = httpx.get(f"{p}/accounts/balance", params={"user_id": user})
        assert balance.status_code == 200 and balance.json() == {"user_id": user, "balance": 500}

        order = httpx.post(f"{o}/orders", json={"user_id": user, "amount": 100, "description": "book"})
        assert order.status_code == 202
        body = order.json()
        assert body["message"] == "Order accepted" and body["status"] == "created"
        assert order.headers["location"] == f"/orders/{body['id']}"

        shown = httpx.get(f"{o}/order/{body['id']}")
        assert shown.status_code == 200
        assert shown.json()["id"] == body["id"] and shown.json()["status"] == "created"  # no workers here

        listed = httpx.get(f"{o}/orders", params={"user_id": user})
        assert listed.status_code == 200 and [row["id"] for row in listed.json()] == [body["id"]]

        bad = httpx.post(f"{o}/orders", json={"user_id": "nope", "amount": 1})
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
        not_json = httpx.post(f"{o}/orders", content=b'{"user_id": "' + user.encode() + b'", "amount": 1}')
        assert not_json.status_code == 415

        for proc in (payments, orders):
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0


def test_serve_with_workers_settles_orders(hsepay_env, broker):
    """Each API process also runs its service's relay and consumer: the saga completes across two processes."""
    env = {**hsepay_env, "HSEPAY_KAFKA": broker, "HSEPAY_KAFKA_IDEMPOTENCE": "false"}
    pay, ords = free_port(), free_port()
    with (
        running(
            ["serve", "payments", "--port", str(pay), "--with-workers", "--insecure-no-auth"],
            env,
            [f"http://127.0.0.1:{pay}/health/ready"],
        ),
        running(
            ["serve", "orders", "--port", str(ords), "--with-workers", "--insecure-no-auth"],
            env,
            [f"http://127.0.0.1:{ords}/health/ready"],
        ),
        httpx.Client(timeout=5) as client,
    ):
        user = str(uuid.uuid4())
        assert client.post(f"http://127.0.0.1:{pay}/accounts", json={"user_id": user}).status_code == 201
        client.post(f"http://127.0.0.1:{pay}/accounts/{user}/deposit", json={"amount": 50})
        ids = [
            client.post(f"http://127.0.0.1:{ords}/orders", json={"user_id": user, "amount": 20}).json()["id"]
            for _ in range(3)
        ]
        deadline = time.monotonic() + 60
        statuses: list[str] = []
        while time.monotonic() < deadline:
            statuses = [client.get(f"http://127.0.0.1:{ords}/orders/{i}").json()["status"] for i in ids]
            if "created" not in statuses:
                break
            time.sleep(0.05)
        assert sorted(statuses) == ["failed", "success", "success"]
        balance = client.get(f"http://127.0.0.1:{pay}/accounts/balance", params={"user_id": user}).json()
        assert balance["balance"] == 10


def test_serve_with_a_secret_enforces_bearer_tokens(hsepay_env):
    secret = "e2e-secret-" + "s" * 32
    env = {**hsepay_env, "HSEPAY_AUTH_SECRET": secret}
    pay = free_port()
    with running(["serve", "payments", "--port", str(pay)], env, [f"http://127.0.0.1:{pay}/health/ready"]):
        url, user = f"http://127.0.0.1:{pay}", str(uuid.uuid4())
        refused = httpx.post(f"{url}/accounts", json={"user_id": user})
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        issued = subprocess.run(
            [sys.executable, "-m", "hsepay.cli", "token", "issue", user],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        token = {"Authorization": f"Bearer {issued.stdout.strip()}"}
        assert httpx.post(f"{url}/accounts", json={"user_id": user}, headers=token).status_code == 201
        assert httpx.get(f"{url}/accounts/balance", params={"user_id": user}, headers=token).json()["balance"] == 0
        assert httpx.post(f"{url}/accounts/{user}/deposit", json={"amount": 5}, headers=token).status_code == 403
