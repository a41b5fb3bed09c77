"""Payments API (DESIGN §3): every endpoint, its status codes and JSON keys, and every bad input."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import update

from hsepay.payments import tables

MAX_AMOUNT = 10**12

BAD_AMOUNTS = [0, -1, MAX_AMOUNT + 1, 10**30, -(10**30), "100", 10.5, 100.0, True, False, None, [100], {"v": 1}]
BAD_UUIDS = ["not-a-uuid", "123", "", "3fa85f64-5717-4562-b3fc-2c963f66afa", "g" * 32, 42, None, ["x"]]


# --- POST /accounts ---------------------------------------------------------------------------


async def test_create_account_returns_201_with_zero_balance(payments_client):
    user_id = uuid.uuid4()
    response = await payments_client.post("/accounts", json={"user_id": str(user_id)})
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "Account created"
    assert body["user_id"] == str(user_id)
    assert body["balance"] == 0
    assert {"message", "user_id", "balance"} <= body.keys()


async def test_create_account_twice_is_409(payments_client, accounts, assert_problem):
    user_id = await accounts.open()
    response = await payments_client.post("/accounts", json={"user_id": str(user_id)})
    assert_problem(response, 409)
    assert await accounts.balance(user_id) == 0


@pytest.mark.parametrize("user_id", BAD_UUIDS)
async def test_create_account_rejects_malformed_user_id(payments_client, assert_problem, user_id):
    assert_problem(await payments_client.post("/accounts", json={"user_id": user_id}), 400)


@pytest.mark.parametrize("extra", [{"balance": 1000}, {"status": "active"}, {"created_at": "2020-01-01T00:00:00Z"}])
async def test_create_account_rejects_unknown_fields(payments_client, assert_problem, extra):
    user_id = uuid.uuid4()
    assert_problem(await payments_client.post("/accounts", json={"user_id": str(user_id), **extra}), 400)
    # Nothing was created: the same user can still open an account, with balance 0.
    created = await payments_client.post("/accounts", json={"user_id": str(user_id)})
    assert created.status_code == 201
    assert created.json()["balance"] == 0


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"not json",
        b'{"user_id": ',
        b"[]",
        b"null",
        b"42",
        b'"text"',
        b"{}",
        b'[{"user_id": "x"}]',
        b'{"user_id": "\xff\xfe"}',
        b"\xff\xfe",
    ],
    ids=[
        "empty",
        "open-brace",
        "garbage",
        "truncated",
        "array",
        "null",
        "number",
        "string",
        "no-fields",
        "list",
        "invalid-utf8-in-string",
        "invalid-utf8",
    ],
)
async def test_create_account_rejects_bad_bodies(payments_client, assert_problem, content):
    response = await payments_client.post("/accounts", content=content, headers={"content-type": "application/json"})
    assert_problem(response, 400)


# --- POST /accounts/{user_id}/deposit -----------------------------------------------------------


async def test_deposit_returns_new_balance(payments_client, accounts):
    user_id = await accounts.open()
    first = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 700})
    assert first.status_code == 200
    assert first.json()["message"] == "Balance refilled"
    assert first.json()["balance"] == 700
    second = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 300})
    assert second.json()["balance"] == 1000
    assert await accounts.balance(user_id) == 1000
    assert sorted(await accounts.ledger(user_id)) == [300, 700]


async def test_deposit_accepts_the_bounds(payments_client, accounts):
    user_id = await accounts.open()
    assert (await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 1})).json()["balance"] == 1
    response = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": MAX_AMOUNT})
    assert response.status_code == 200
    assert response.json()["balance"] == MAX_AMOUNT + 1


async def test_deposit_with_matching_body_user_id(payments_client, accounts):
    user_id = await accounts.open()
    response = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 50, "user_id": str(user_id)})
    assert response.status_code == 200
    assert response.json()["balance"] == 50


async def test_deposit_with_other_body_user_id_is_refused(payments_client, accounts, assert_problem):
    user_id = await accounts.open()
    other = await accounts.open()
    response = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 50, "user_id": str(other)})
    assert_problem(response, 400)
    assert await accounts.balance(user_id) == 0
    assert await accounts.balance(other) == 0


async def test_deposit_to_unknown_account_is_404(payments_client, accounts, assert_problem):
    user_id = uuid.uuid4()
    assert_problem(await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 10}), 404)
    assert await accounts.ledger(user_id) == []


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=repr)
async def test_deposit_rejects_bad_amounts(payments_client, accounts, assert_problem, amount):
    user_id = await accounts.open()
    assert_problem(await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": amount}), 400)
    assert await accounts.balance(user_id) == 0
    assert await accounts.ledger(user_id) == []


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b"null", b"{}", b"100", b'{"amount": 1e3}', b'{"amount": 5, "user_id": "\xff"}'],
    ids=["empty", "open-brace", "array", "null", "no-fields", "number", "float-amount", "invalid-utf8"],
)
async def test_deposit_rejects_bad_bodies(payments_client, accounts, assert_problem, content):
    user_id = await accounts.open()
    response = await payments_client.post(
        f"/accounts/{user_id}/deposit", content=content, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400)
    assert await accounts.balance(user_id) == 0


@pytest.mark.parametrize("extra", [{"balance": 10**9}, {"status": "ok"}, {"reference": "x"}])
async def test_deposit_rejects_unknown_fields(payments_client, accounts, assert_problem, extra):
    user_id = await accounts.open()
    response = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 5, **extra})
    assert_problem(response, 400)
    assert await accounts.balance(user_id) == 0


@pytest.mark.parametrize("path_id", ["not-a-uuid", "123", "3fa85f64-5717-4562-b3fc-2c963f66afa", "%20", "x" * 300])
async def test_deposit_rejects_malformed_path_user_id(payments_client, assert_problem, path_id):
    assert_problem(await payments_client.post(f"/accounts/{path_id}/deposit", json={"amount": 10}), 400)


@pytest.mark.parametrize("body_id", ["not-a-uuid", 7, ""])
async def test_deposit_rejects_malformed_body_user_id(payments_client, accounts, assert_problem, body_id):
    user_id = await accounts.open()
    response = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 10, "user_id": body_id})
    assert_problem(response, 400)


async def test_deposit_that_would_overflow_the_balance_is_refused(
    payments_client, payments_engine, accounts, assert_problem
):
    user_id = await accounts.open()
    near_max = 2**63 - 1 - 5  # BIGINT's ceiling; set directly, 9 million deposits would be slow
    async with payments_engine.begin() as conn:
        await conn.execute(update(tables.accounts).where(tables.accounts.c.user_id == user_id).values(balance=near_max))
    assert_problem(await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 10}), 409)
    assert await accounts.balance(user_id) == near_max
    assert await accounts.ledger(user_id) == []


# --- GET /accounts/balance -----------------------------------------------------------------------


async def test_balance_returns_user_and_balance(payments_client, accounts):
    user_id = await accounts.open(deposit=1234)
    response = await payments_client.get("/accounts/balance", params={"user_id": str(user_id)})
    assert response.status_code == 200
    assert response.json() == {"user_id": str(user_id), "balance": 1234}


async def test_balance_of_unknown_account_is_404(payments_client, assert_problem):
    assert_problem(await payments_client.get("/accounts/balance", params={"user_id": str(uuid.uuid4())}), 404)


async def test_balance_without_user_id_is_400(payments_client, assert_problem):
    assert_problem(await payments_client.get("/accounts/balance"), 400)


@pytest.mark.parametrize("user_id", ["not-a-uuid", "", "123", "3fa85f64-5717-4562-b3fc-2c963f66afa", "x" * 5000])
async def test_balance_with_malformed_user_id_is_400(payments_client, assert_problem, user_id):
    assert_problem(await payments_client.get("/accounts/balance", params={"user_id": user_id}), 400)


# --- Idempotency-Key ----------------------------------------------------------------------------


async def test_deposit_replay_returns_stored_response_without_second_effect(payments_client, accounts):
    user_id = await accounts.open()
    headers = {"Idempotency-Key": "refill-1"}
    first = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 250}, headers=headers)
    again = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 250}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() == {"message": "Balance refilled", "user_id": str(user_id), "balance": 250}
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert await accounts.balance(user_id) == 250
    assert await accounts.ledger(user_id) == [250]


async def test_deposit_key_reused_with_other_body_is_409(payments_client, accounts, assert_problem):
    user_id = await accounts.open()
    headers = {"Idempotency-Key": "refill-2"}
    url = f"/accounts/{user_id}/deposit"
    assert (await payments_client.post(url, json={"amount": 250}, headers=headers)).status_code == 200
    other = await payments_client.post(url, json={"amount": 251}, headers=headers)
    assert_problem(other, 409)
    assert await accounts.ledger(user_id) == [250]


async def test_deposit_keys_are_scoped_to_the_account(payments_client, accounts):
    first, second = await accounts.open(), await accounts.open()
    headers = {"Idempotency-Key": "same-key"}
    for user_id in (first, second):
        response = await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 9}, headers=headers)
        assert response.status_code == 200
        assert "idempotent-replayed" not in response.headers
    assert await accounts.balance(first) == await accounts.balance(second) == 9


async def test_deposits_without_key_are_separate_effects(payments_client, accounts):
    user_id = await accounts.open()
    for _ in range(2):
        assert (await payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 40})).status_code == 200
    assert await accounts.balance(user_id) == 80
    assert await accounts.ledger(user_id) == [40, 40]


async def test_concurrent_same_key_deposits_have_one_effect(concurrent_payments_client, accounts, payments_pool_peak):
    user_id = await accounts.open()
    headers = {"Idempotency-Key": "burst"}
    with payments_pool_peak:
        responses = await asyncio.gather(
            *(
                concurrent_payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": 75}, headers=headers)
                for _ in range(20)
            )
        )
    assert payments_pool_peak.peak > 1, "the requests did not overlap"
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.json()["balance"] for r in responses} == {75}
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert await accounts.balance(user_id) == 75
    assert await accounts.ledger(user_id) == [75]


async def test_create_account_replay_with_key(payments_client, assert_problem):
    user_id = str(uuid.uuid4())
    headers = {"Idempotency-Key": "open-1"}
    first = await payments_client.post("/accounts", json={"user_id": user_id}, headers=headers)
    again = await payments_client.post("/accounts", json={"user_id": user_id}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # Without the key it is a second request, refused as a duplicate.
    assert_problem(await payments_client.post("/accounts", json={"user_id": user_id}), 409)
    # The key with another body is a misuse of the key.
    assert_problem(await payments_client.post("/accounts", json={"user_id": str(uuid.uuid4())}, headers=headers), 409)


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "tab\there"], ids=["empty", "blank", "too-long", "control"])
async def test_malformed_idempotency_key_is_400(payments_client, accounts, assert_problem, key):
    user_id = await accounts.open()
    response = await payments_client.post(
        f"/accounts/{user_id}/deposit", json={"amount": 5}, headers={"Idempotency-Key": key}
    )
    assert_problem(response, 400)
    assert await accounts.balance(user_id) == 0
