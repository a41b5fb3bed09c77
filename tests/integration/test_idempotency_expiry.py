"""Idempotency keys are forgotten after their TTL (the seed never cleaned anything up)."""

from __future__ import annotations

import uuid

from litestar.testing import AsyncTestClient
from sqlalchemy import func, select, update

from hsepay import idempotency
from hsepay.api.app import create_payments_app
from hsepay.config import ApiSettings
from hsepay.payments.tables import idempotency_keys


async def test_expired_keys_are_purged_and_recent_ones_kept(payments_engine):
    async with AsyncTestClient(create_payments_app(payments_engine)) as client:
        for key in ("old", "new"):
            response = await client.post(
                "/accounts", json={"user_id": str(uuid.uuid4())}, headers={"Idempotency-Key": key}
            )
            assert response.status_code == 201
    async with payments_engine.begin() as conn:
        await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.key == "old")
            .values(created_at=func.now() - func.make_interval(0, 0, 0, 2))  # two days ago
        )
        assert await idempotency.purge_expired(conn, idempotency_keys, older_than=24 * 3600) == 1
        left = (await conn.execute(select(idempotency_keys.c.key))).scalars().all()
    assert left == ["new"]


async def test_the_api_purges_on_its_own_schedule(payments_engine):
    async with payments_engine.begin() as conn:
        await conn.execute(
            idempotency_keys.insert().values(
                scope="POST /accounts",
                key="stale",
                request_hash="x",
                created_at=func.now() - func.make_interval(0, 0, 0, 2),
            )
        )
    settings = ApiSettings(idempotency_ttl=24 * 3600, purge_interval=3600)
    async with AsyncTestClient(create_payments_app(payments_engine, api=settings)) as client:
        # The purge runs when the app starts; the key is gone as soon as a request can see it.
        assert (await client.get("/health/live")).status_code == 200
        for _ in range(100):
            async with payments_engine.connect() as conn:
                if not (await conn.execute(select(func.count()).select_from(idempotency_keys))).scalar():
                    break
            await client.get("/health/live")
        async with payments_engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(idempotency_keys))).scalar() == 0
