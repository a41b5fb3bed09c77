"""Inputs that once gave a 500 or were applied when they should not have been (issue 13's findings).

Each test names the finding it guards: the same Idempotency-Key under another spelling of the path,
a key reused after it expired, deep nesting, duplicate keys, two Idempotency-Key headers, bodies
that are not JSON (CSRF by a cross-origin "simple" request), and the id forms the path refused.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from litestar.connection import Request
from litestar.testing import AsyncTestClient
from sqlalchemy import delete

from hsepay.api import bodies
from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.config import SecuritySettings
from hsepay.payments.tables import idempotency_keys

JSON = {"content-type": "application/json"}
INSECURE = SecuritySettings(rate_limit=0)


def spellings(user_id: uuid.UUID) -> list[str]:
    return [str(user_id).upper(), user_id.hex, user_id.hex.upper()]


# --- 500 a: one key, the path's user id spelled another way --------------------------------------


async def test_same_key_with_the_user_id_spelled_another_way_is_a_replay(payments_client, accounts):
    user_id = await accounts.open()
    headers = {"Idempotency-Key": "refill-spelled"}
    first = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 30}, headers=headers)
    assert first.status_code == 200
    for spelled in spellings(user_id):
        again = await payments_client.post(f"/accounts/{spelled}/deposit", json={"amount": 30}, headers=headers)
        assert again.status_code == 200, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
    assert await accounts.ledger(user_id) == [30]


@pytest.mark.parametrize("form", ["urn:uuid:{}", "{{{}}}", "urn:uuid:{{{}}}"])
async def test_path_ids_in_forms_the_query_refuses_are_400(
    payments_client, orders_client, accounts, assert_problem, form
):
    user_id = await accounts.open()
    spelled = form.format(user_id)
    headers = {"Idempotency-Key": "refill-urn"}
    assert_problem(await payments_client.post(f"/accounts/{spelled}/deposit", json={"amount": 5}, headers=headers), 400)
    assert_problem(await payments_client.get("/accounts/balance", params={"user_id": spelled}), 400)
    assert_problem(await orders_client.get(f"/orders/{form.format(uuid.uuid4())}"), 400)
    assert await accounts.ledger(user_id) == []


async def test_an_order_id_in_any_accepted_spelling_finds_the_order(orders_client):
    created = await orders_client.post("/orders", json={"user_id": str(uuid.uuid4()), "amount": 3})
    order_id = uuid.UUID(created.json()["id"])
    for spelled in spellings(order_id):
        response = await orders_client.get(f"/order/{spelled}")
        assert response.status_code == 200 and response.json()["id"] == str(order_id)


# --- 500 b: a deposit key reused after its record expired -----------------------------------------


async def test_deposit_key_reused_after_expiry_is_409_and_not_applied_twice(
    payments_client, payments_engine, accounts, assert_problem
):
    user_id = await accounts.open()
    headers = {"Idempotency-Key": "refill-expiring"}
    url = f"/accounts/{user_id}/deposit"
    assert (await payments_client.post(url, json={"amount": 40}, headers=headers)).status_code == 200
    async with payments_engine.begin() as conn:  # what the purge does once the TTL has passed
        await conn.execute(delete(idempotency_keys))
    body = assert_problem(await payments_client.post(url, json={"amount": 40}, headers=headers), 409)
    assert body["title"] == "Deposit already recorded"
    assert "new key" in body["detail"]
    assert await accounts.ledger(user_id) == [40]
    assert await accounts.balance(user_id) == 40
    # A new key is a new deposit, as it should be.
    assert (
        await payments_client.post(url, json={"amount": 40}, headers={"Idempotency-Key": "refill-2"})
    ).status_code == 200
    assert await accounts.balance(user_id) == 80


# --- 500 c: deep nesting; duplicate keys -------------------------------------------------------------


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


DEEP_BODIES = {
    "top-level": nested(966),
    "in-a-field": b'{"user_id": ' + nested(966) + b', "amount": 5}',
    "in-an-unknown-field": b'{"amount": 5, "x": ' + nested(5000) + b"}",
    "objects": b'{"a":' * 2000 + b"1" + b"}" * 2000,
}
POSTS = ["/accounts", "/accounts/{user}/deposit", "/orders"]


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=DEEP_BODIES.keys())
@pytest.mark.parametrize("path", POSTS)
async def test_deep_nesting_is_400(payments_client, orders_client, accounts, orders_db, assert_problem, path, body):
    user_id = await accounts.open()
    client = orders_client if path == "/orders" else payments_client
    assert_problem(await client.post(path.format(user=user_id), content=body, headers=JSON), 400)
    assert await accounts.ledger(user_id) == []
    assert await orders_db.orders() == []


DUPLICATES = [
    ("/accounts", '{{"user_id": "{other}", "user_id": "{new}"}}'),
    ("/accounts", '{{"user_id": "{new}", "\\u0075ser_id": "{other}"}}'),
    ("/accounts/{user}/deposit", '{{"amount": 1, "amount": 100}}'),
    ("/accounts/{user}/deposit", '{{"amount": 1, "\\u0061mount": 100}}'),
    ("/orders", '{{"user_id": "{user}", "amount": 1, "amount": 100}}'),
    ("/orders", '{{"user_id": "{other}", "user_id": "{user}", "amount": 5}}'),
    ("/orders", '{{"user_id": "{user}", "amount": 1, "\\u0061mount": 100}}'),
]


@pytest.mark.parametrize("path, template", DUPLICATES)
async def test_duplicate_json_keys_are_400(
    payments_client, orders_client, accounts, orders_db, payments_engine, assert_problem, path, template
):
    user_id, new = await accounts.open(), uuid.uuid4()
    client = orders_client if path == "/orders" else payments_client
    content = template.format(user=user_id, new=new, other=uuid.uuid4())
    body = assert_problem(await client.post(path.format(user=user_id), content=content, headers=JSON), 400)
    assert "repeats the key" in body["detail"]
    assert await accounts.ledger(user_id) == []
    assert await orders_db.orders() == []
    assert (await client.get("/accounts/balance", params={"user_id": str(new)})).status_code in (404, 405)


def test_structure_check_passes_valid_bodies_and_counts_escaped_keys_once():
    bodies.check_structure(b'{"a": "{\\"a\\": 1, \\"a\\": 2}", "b": [1, {"a": 1}], "c": {"a": 2}}')
    with pytest.raises(Exception, match="repeats the key 'a'"):
        bodies.check_structure(b'{"a": 1, "\\u0061": 2}')
    with pytest.raises(Exception, match="nested deeper"):
        bodies.check_structure(b'{"a":' * 40 + b"1" + b"}" * 40)


# --- two Idempotency-Key headers ---------------------------------------------------------------------


@pytest.mark.parametrize("folded", [False, True], ids=["two-lines", "folded-by-a-proxy"])
async def test_two_idempotency_key_headers_are_400(
    payments_engine, orders_engine, accounts, orders_db, assert_problem, folded
):
    """As two header lines (what uvicorn passes on), or folded into one `a, b` line by an intermediary."""
    user_id = await accounts.open()
    keys = (
        [("Idempotency-Key", "first, second")]
        if folded
        else [("Idempotency-Key", "first"), ("Idempotency-Key", "second")]
    )
    headers = [*keys, ("Content-Type", "application/json")]
    for app, path, body in [
        (create_payments_app(payments_engine, security=INSECURE), f"/accounts/{user_id}/deposit", {"amount": 5}),
        (create_orders_app(orders_engine, security=INSECURE), "/orders", {"user_id": str(user_id), "amount": 5}),
    ]:
        # httpx's own ASGI transport keeps repeated headers apart (Litestar's test client folds them).
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.post(path, content=json.dumps(body).encode(), headers=headers)
        assert_problem(response, 400)
        assert "Idempotency-Key" in response.json()["detail"]
    assert await accounts.ledger(user_id) == []
    assert await orders_db.orders() == []


# --- JSON only: 415, and no CSRF through a "simple" cross-origin request -----------------------------


NOT_JSON = {
    "text/plain": {"content-type": "text/plain"},
    "form": {"content-type": "application/x-www-form-urlencoded"},
    "multipart": {"content-type": "multipart/form-data; boundary=x"},
    "xml": {"content-type": "application/xml"},
    "json-lookalike": {"content-type": "text/json"},
    "none": {},
}


@pytest.mark.parametrize("headers", NOT_JSON.values(), ids=NOT_JSON.keys())
async def test_a_body_that_is_not_declared_json_is_415(
    payments_client, orders_client, accounts, orders_db, assert_problem, headers
):
    user_id = await accounts.open()
    order = json.dumps({"user_id": str(user_id), "amount": 5}).encode()
    assert_problem(await orders_client.post("/orders", content=order, headers=headers), 415)
    deposit = json.dumps({"amount": 5}).encode()
    assert_problem(await payments_client.post(f"/accounts/{user_id}/deposit", content=deposit, headers=headers), 415)
    account = json.dumps({"user_id": str(uuid.uuid4())}).encode()
    assert_problem(await payments_client.post("/accounts", content=account, headers=headers), 415)
    assert_problem(await payments_client.post("/accounts", headers=headers), 415)  # no body at all
    assert await orders_db.orders() == []
    assert await accounts.ledger(user_id) == []


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
)
async def test_json_media_types_are_accepted(orders_client, content_type):
    order = json.dumps({"user_id": str(uuid.uuid4()), "amount": 5}).encode()
    response = await orders_client.post("/orders", content=order, headers={"content-type": content_type})
    assert response.status_code == 202, response.text


async def test_a_cross_origin_text_plain_post_creates_nothing(orders_client, orders_db, assert_problem):
    """The CSRF of the findings: a page on another origin may send text/plain without a preflight."""
    order = json.dumps({"user_id": str(uuid.uuid4()), "amount": 5}).encode()
    headers = {"content-type": "text/plain", "origin": "http://evil.example"}
    response = await orders_client.post("/orders", content=order, headers=headers)
    assert_problem(response, 415)
    assert "access-control-allow-origin" not in response.headers
    assert await orders_db.orders() == []


async def test_cors_is_off_by_default(orders_client):
    preflight = await orders_client.options(
        "/orders",
        headers={
            "origin": "http://evil.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_allows_only_the_configured_origins(orders_engine):
    security = SecuritySettings(cors_origins=("https://shop.example",), rate_limit=0)
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "content-type"}
    async with AsyncTestClient(app=create_orders_app(orders_engine, security=security)) as client:
        allowed = await client.options("/orders", headers={**preflight, "origin": "https://shop.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        refused = await client.options("/orders", headers={**preflight, "origin": "http://evil.example"})
        assert "access-control-allow-origin" not in refused.headers
        simple = await client.get("/orders", headers={"origin": "https://shop.example"})
        assert simple.headers["access-control-allow-origin"] == "https://shop.example"


# --- one strict parse per body -----------------------------------------------------------------------


async def test_a_body_is_parsed_once_strictly_and_never_leniently(orders_client, monkeypatch):
    calls = []
    strict = bodies.decode_strict

    def counting(body, schema):
        calls.append(schema.__name__)
        return strict(body, schema)

    def lenient(*args, **kwargs):
        raise AssertionError("the lenient parse ran")

    monkeypatch.setattr(bodies, "decode_strict", counting)
    monkeypatch.setattr(Request, "json", lenient)
    response = await orders_client.post("/orders", json={"user_id": str(uuid.uuid4()), "amount": 5})
    assert response.status_code == 202, response.text
    assert calls == ["CreateOrder"]
