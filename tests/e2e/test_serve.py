"""`hsepay serve` answers the six requests of the seed's Postman run with the JSON of DESIGN §3."""

from __future__ import annotations

import signal
import uuid

import httpx

from tests.e2e.conftest import free_port, running


def test_seed_postman_run_against_served_apis(hsepay_env):
    pay, ords = free_port(), free_port()
    with (
        running(["serve", "payments", "--port", str(pay)], hsepay_env, [f"http://127.0.0.1:{pay}/health/ready"]) as payments,
        running(["serve", "orders", "--port", str(ords)], hsepay_env, [f"http://127.0.0.1:{ords}/health/ready"]) as orders,
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

        bad = httpx.post(f"{o}/orders", content=b'{"user_id": "nope", "amount": 1}')
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")

        for proc in (payments, orders):
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
