"""No Authorization header gets a 5xx (issue 18): a token with an unusual JOSE header or odd claims is a
401 problem+json on both APIs, counts against the caller's address in the rate limiter, and is logged at
warning level at most. (tests/unit/test_token_fuzz.py fuzzes the verifier itself.)"""

from __future__ import annotations

import logging
import time
import uuid

import httpx
import pytest

from hsepay.api.app import create_orders_app, create_payments_app
from hsepay.config import SecuritySettings
from tests.tokens import SECRET, claims, issue
from tests.unit.test_token_fuzz import HS256, signed

USER = uuid.uuid4()
ODD = {
    "crit": signed({**HS256, "crit": ["exp"]}, claims(USER)),
    "kid-int": signed({**HS256, "kid": 5}, claims(USER)),
    "kid-null": signed({**HS256, "kid": None}, claims(USER)),
    "header-list": signed([], claims(USER)),
    "exp-string": signed(HS256, claims(USER, exp="tomorrow")),
    "exp-huge": signed(HS256, claims(USER, exp=10**400)),
    "sub-list": signed(HS256, claims(USER, sub=["x"])),
    "role-dict": signed(HS256, claims(USER, role={"operator": True})),
    "aud-int": signed(HS256, claims(USER, aud=5)),
    "padded": issue(USER) + "=",
    "lives-a-year": signed(HS256, claims(USER, exp=int(time.time()) + 366 * 24 * 3600)),
    "not-latin-1-safe": "é.é.é",
}


def _client(app, peer: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 40000)), base_url="http://test")


@pytest.mark.parametrize("name", ODD)
async def test_an_odd_token_is_a_401_problem_on_both_apis(name, payments_engine, orders_engine, assert_problem, caplog):
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=0)
    apps = {
        "/accounts/balance?user_id=" + str(USER): create_payments_app(payments_engine, security=security),
        "/orders": create_orders_app(orders_engine, security=security),
    }
    caplog.set_level(logging.DEBUG)
    for path, app in apps.items():
        async with _client(app, "7.7.7.7") as client:
            response = await client.get(path, headers={"Authorization": f"Bearer {ODD[name]}".encode()})
        assert_problem(response, 401)
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert not [r for r in caplog.records if r.levelno > logging.WARNING], [r.getMessage() for r in caplog.records]


async def test_odd_tokens_count_against_the_callers_address(orders_engine):
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=1, rate_burst=3)
    app = create_orders_app(orders_engine, security=security)
    async with _client(app, "9.9.9.9") as guesser, _client(app, "8.8.8.8") as other:
        statuses = [
            (await guesser.get("/orders", headers={"Authorization": f"Bearer {ODD[name]}"})).status_code
            for name in ("crit", "kid-int", "padded", "exp-huge")
        ]
        assert statuses == [401, 401, 401, 429]
        assert (await other.get("/orders", headers={"Authorization": f"Bearer {ODD['crit']}"})).status_code == 401


async def test_a_long_lived_token_is_refused_by_the_server_whoever_issued_it(orders_engine, assert_problem):
    security = SecuritySettings(auth_secrets=(SECRET,), rate_limit=0, auth_max_ttl=3600)
    app = create_orders_app(orders_engine, security=security)
    async with _client(app, "7.7.7.7") as client:
        too_long = await client.get("/orders", headers={"Authorization": f"Bearer {issue(USER, ttl=7200)}"})
        fine = await client.get("/orders", headers={"Authorization": f"Bearer {issue(USER, ttl=3600)}"})
    assert "at most 3600 s" in assert_problem(too_long, 401)["detail"]
    assert fine.status_code == 200
