"""Every answer names its request (X-Request-ID), once: also a refusal raised before any handler runs
(the guard's 401, an unknown route), which Litestar renders outside the observer's middleware."""

from __future__ import annotations

import re

HEX = re.compile(r"[0-9a-f]{32}")


async def test_a_refusal_by_the_guard_carries_one_request_id(secured_payments_client, secured_orders_client):
    for client, path in ((secured_payments_client, "/accounts"), (secured_orders_client, "/orders")):
        refused = await client.post(path, json={"user_id": "00000000-0000-4000-8000-000000000001"})
        assert refused.status_code == 401, refused.text
        assert len(ids := refused.headers.get_list("x-request-id")) == 1 and HEX.fullmatch(ids[0]), refused.headers


async def test_an_unknown_route_and_a_handled_answer_carry_one_request_id_each(payments_client):
    for method, path in (("GET", "/no/such/route"), ("GET", "/health/live")):
        answer = await payments_client.request(method, path)
        assert answer.status_code in (404, 200), answer.text
        assert len(answer.headers.get_list("x-request-id")) == 1, (method, path, answer.headers)


async def test_the_callers_request_id_is_kept_on_a_refusal(secured_payments_client):
    given = "a" * 32
    refused = await secured_payments_client.get("/accounts/balance", headers={"X-Request-ID": given})
    assert refused.status_code == 401 and refused.headers.get_list("x-request-id") == [given], refused.headers
