"""Who may do what (issue 13, docs/SECURITY.md): every endpoint × every kind of caller → one status.

The target user ("owner") has an account with money and an order. A user token acts only for its
own user id: another user's account or order is a 404 (its existence is not told), and acting for
another user in a body is a 403. Deposits are an operator action. Operators act on everything.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from litestar.testing import AsyncTestClient

from hsepay.api.app import create_payments_app
from hsepay.config import SecuritySettings
from tests.support import open_account, place_order
from tests.tokens import OTHER_SECRET, PREVIOUS_SECRET, SECRET, claims, forge, issue

CALLERS = ["none", "malformed", "bad-signature", "alg-none", "expired", "other-user", "own-user", "operator"]


@dataclass
class World:
    owner: uuid.UUID
    newcomer: uuid.UUID
    """A user without an account yet (for POST /accounts)."""
    order_id: uuid.UUID

    def authorization(self, caller: str, subject: uuid.UUID) -> dict[str, str]:
        token = {
            "none": None,
            "malformed": "Basic dXNlcjpwYXNz",
            "bad-signature": f"Bearer {forge(claims(subject), secret=OTHER_SECRET)}",
            "alg-none": f"Bearer {forge(claims(subject), alg='none')}",
            "expired": f"Bearer {forge(claims(subject, exp=int(time.time()) - 3600))}",
            "other-user": f"Bearer {issue(uuid.uuid4())}",
            "own-user": f"Bearer {issue(subject)}",
            "operator": f"Bearer {issue(uuid.uuid4(), 'operator')}",
        }[caller]
        return {} if token is None else {"Authorization": token}


@dataclass(frozen=True)
class Endpoint:
    service: str
    method: str
    path: Callable[[World], str]
    body: Callable[[World], dict | None]
    subject: Callable[[World], uuid.UUID]
    expected: dict[str, int]
    """Status per caller; every caller not named gets a 401."""


ENDPOINTS = {
    "POST /accounts": Endpoint(
        "payments",
        "POST",
        lambda w: "/accounts",
        lambda w: {"user_id": str(w.newcomer)},
        lambda w: w.newcomer,
        {"other-user": 403, "own-user": 201, "operator": 201},
    ),
    "POST /accounts/{id}/deposit": Endpoint(
        "payments",
        "POST",
        lambda w: f"/accounts/{w.owner}/deposit",
        lambda w: {"amount": 5},
        lambda w: w.owner,
        {"other-user": 403, "own-user": 403, "operator": 200},
    ),
    "GET /accounts/balance": Endpoint(
        "payments",
        "GET",
        lambda w: f"/accounts/balance?user_id={w.owner}",
        lambda w: None,
        lambda w: w.owner,
        {"other-user": 404, "own-user": 200, "operator": 200},
    ),
    "POST /orders": Endpoint(
        "orders",
        "POST",
        lambda w: "/orders",
        lambda w: {"user_id": str(w.owner), "amount": 5},
        lambda w: w.owner,
        {"other-user": 403, "own-user": 202, "operator": 202},
    ),
    "GET /orders/{id}": Endpoint(
        "orders",
        "GET",
        lambda w: f"/orders/{w.order_id}",
        lambda w: None,
        lambda w: w.owner,
        {"other-user": 404, "own-user": 200, "operator": 200},
    ),
    "GET /order/{id}": Endpoint(
        "orders",
        "GET",
        lambda w: f"/order/{w.order_id}",
        lambda w: None,
        lambda w: w.owner,
        {"other-user": 404, "own-user": 200, "operator": 200},
    ),
    "GET /orders": Endpoint(
        "orders",
        "GET",
        lambda w: "/orders",
        lambda w: None,
        lambda w: w.owner,
        {"other-user": 200, "own-user": 200, "operator": 200},
    ),
    "GET /orders?user_id=": Endpoint(
        "orders",
        "GET",
        lambda w: f"/orders?user_id={w.owner}",
        lambda w: None,
        lambda w: w.owner,
        {"other-user": 403, "own-user": 200, "operator": 200},
    ),
}


@pytest.fixture
async def world(payments_engine, orders_engine) -> World:
    owner = await open_account(payments_engine, balance=1000)
    order_id = await place_order(orders_engine, owner, 10, "orders")
    return World(owner=owner, newcomer=uuid.uuid4(), order_id=order_id)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
async def test_authorization_table(
    endpoint, caller, world, secured_payments_client, secured_orders_client, assert_problem
):
    spec = ENDPOINTS[endpoint]
    client = secured_payments_client if spec.service == "payments" else secured_orders_client
    headers = world.authorization(caller, spec.subject(world))
    body = spec.body(world)
    if spec.method == "POST":
        response = await client.post(spec.path(world), json=body, headers=headers)
    else:
        response = await client.get(spec.path(world), headers=headers)
    expected = spec.expected.get(caller, 401)
    if expected >= 400:
        assert_problem(response, expected)
    else:
        assert response.status_code == expected, response.text
    if expected == 401:
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="hsepay"')
        assert ('error="invalid_token"' in challenge) == (caller != "none")


async def test_a_user_lists_only_its_own_orders_an_operator_every_order(world, secured_orders_client, orders_engine):
    stranger = uuid.uuid4()
    theirs = await place_order(orders_engine, stranger, 7, "orders")

    async def listed(token: str, **params) -> set[str]:
        response = await secured_orders_client.get(
            "/orders", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        return {order["id"] for order in response.json()}

    assert await listed(issue(world.owner)) == {str(world.order_id)}
    assert await listed(issue(stranger)) == {str(theirs)}
    assert await listed(issue(uuid.uuid4())) == set()
    operator = issue(uuid.uuid4(), "operator")
    assert await listed(operator) == {str(world.order_id), str(theirs)}
    assert await listed(operator, user_id=str(stranger)) == {str(theirs)}


async def test_another_users_account_looks_exactly_like_a_missing_one(world, secured_payments_client):
    token = {"Authorization": f"Bearer {issue(uuid.uuid4())}"}
    theirs = await secured_payments_client.get("/accounts/balance", params={"user_id": str(world.owner)}, headers=token)
    missing_id = uuid.uuid4()
    missing = await secured_payments_client.get("/accounts/balance", params={"user_id": str(missing_id)}, headers=token)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == {
        **missing.json(),
        "detail": missing.json()["detail"].replace(str(missing_id), str(world.owner)),
    }


async def test_a_token_signed_with_the_previous_secret_still_works(world, secured_payments_client):
    token = issue(world.owner, secret=PREVIOUS_SECRET)
    response = await secured_payments_client.get(
        "/accounts/balance", params={"user_id": str(world.owner)}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert SECRET != PREVIOUS_SECRET


async def test_self_deposit_when_enabled_is_own_account_only(world, payments_engine, accounts, assert_problem):
    security = SecuritySettings(auth_secrets=(SECRET,), self_deposit=True, rate_limit=0)
    async with AsyncTestClient(app=create_payments_app(payments_engine, security=security)) as client:
        own = await client.post(
            f"/accounts/{world.owner}/deposit",
            json={"amount": 5},
            headers={"Authorization": f"Bearer {issue(world.owner)}"},
        )
        assert own.status_code == 200 and own.json()["balance"] == 1005
        stranger = {"Authorization": f"Bearer {issue(uuid.uuid4())}"}
        assert_problem(await client.post(f"/accounts/{world.owner}/deposit", json={"amount": 5}, headers=stranger), 404)
    assert sorted(await accounts.ledger(world.owner)) == [5, 1000]


@pytest.mark.parametrize("forged", [{"status": "success"}, {"id": str(uuid.uuid4())}, {"role": "operator"}])
async def test_client_sent_status_ids_and_roles_never_bind(
    world, secured_orders_client, orders_db, assert_problem, forged
):
    token = {"Authorization": f"Bearer {issue(world.owner)}"}
    body = {"user_id": str(world.owner), "amount": 5, **forged}
    assert_problem(await secured_orders_client.post("/orders", json=body, headers=token), 400)
    assert len(await orders_db.orders()) == 1  # only the world's own order


async def test_idempotency_keys_belong_to_their_caller(world, secured_orders_client, payments_engine, orders_db):
    """Two users who pick the same key get two orders: neither a replay of the other's nor a 409."""
    other = await open_account(payments_engine, balance=0)
    key = {"Idempotency-Key": "order-1"}
    responses = [
        await secured_orders_client.post(
            "/orders",
            json={"user_id": str(user), "amount": 5},
            headers={**key, "Authorization": f"Bearer {issue(user)}"},
        )
        for user in (world.owner, other)
    ]
    assert [r.status_code for r in responses] == [202, 202]
    assert all("idempotent-replayed" not in r.headers for r in responses)
    assert len(await orders_db.orders()) == 3


async def test_two_operators_deposit_with_the_same_key_each_once(world, payments_engine):
    """A deposit's key is the caller's own for its ledger reference as for its stored response: a second
    operator's first use of a key is a deposit, not a 409 about a response it never stored."""
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=0)
    async with AsyncTestClient(app=create_payments_app(payments_engine, security=security)) as client:
        url, key = f"/accounts/{world.owner}/deposit", {"Idempotency-Key": "refill-1"}
        answers = []
        for operator in (uuid.uuid4(), uuid.uuid4()):
            token = {"Authorization": f"Bearer {issue(operator, 'operator')}"}
            answers.append(await client.post(url, json={"amount": 7}, headers={**key, **token}))
            replay = await client.post(url, json={"amount": 7}, headers={**key, **token})
            assert replay.headers.get("idempotent-replayed") == "true"
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert answers[1].json()["balance"] - answers[0].json()["balance"] == 7
