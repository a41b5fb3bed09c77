"""Money under concurrent requests (DESIGN §3, §5): the database decides, not a check-then-act.

Requests go through `concurrent_concurrent_payments_client` (see conftest) so that they really overlap, and
each test proves it did: more than one pooled connection was in use at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from sqlalchemy import func, select

from hsepay.payments.tables import accounts as accounts_table

N = 50


async def test_concurrent_account_creation_for_one_user_opens_one_account(
    concurrent_payments_client, payments_engine, payments_pool_peak
):
    user_id = str(uuid.uuid4())
    with payments_pool_peak:
        responses = await asyncio.gather(
            *(concurrent_payments_client.post("/accounts", json={"user_id": user_id}) for _ in range(N))
        )
    assert payments_pool_peak.peak > 1, "the requests did not overlap"
    assert Counter(r.status_code for r in responses) == {201: 1, 409: N - 1}
    refused = [r for r in responses if r.status_code == 409]
    assert all(r.headers["content-type"].startswith("application/problem+json") for r in refused)
    async with payments_engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(accounts_table))).scalar_one()
    assert count == 1


async def test_concurrent_deposits_add_up_exactly(concurrent_payments_client, accounts, payments_pool_peak):
    user_id = await accounts.open()
    amounts = [1000 + 7 * i for i in range(N)]  # distinct, so a lost or doubled one shows in the sum
    with payments_pool_peak:
        responses = await asyncio.gather(
            *(concurrent_payments_client.post(f"/accounts/{user_id}/deposit", json={"amount": a}) for a in amounts)
        )
    assert payments_pool_peak.peak > 1, "the requests did not overlap"
    assert [r.status_code for r in responses] == [200] * N
    # Each response saw its own deposit applied on top of a distinct set of earlier ones.
    assert len({r.json()["balance"] for r in responses}) == N
    assert max(r.json()["balance"] for r in responses) == sum(amounts)

    assert await accounts.balance(user_id) == sum(amounts)
    ledger = await accounts.ledger(user_id)
    assert sorted(ledger) == sorted(amounts)
    assert await accounts.ledger(user_id, kind="debit") == []
    assert sum(ledger) == await accounts.balance(user_id)
