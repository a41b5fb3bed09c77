"""Saga fixtures: the real broker (embedded Tansu, or HSEPAY_TEST_KAFKA) and per-test topics/groups."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import replace

import pytest
import pytest_asyncio
from sqlalchemy import select

from hsepay.bootstrap import Runtime
from hsepay.config import ConsumerSettings, KafkaSettings, RelaySettings, SagaSettings, Settings
from hsepay.orders.tables import orders


@pytest.fixture
def saga_settings(broker, data_dir) -> Settings:
    """Settings for one test: its own topics and consumer groups on the shared broker."""
    suffix = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=data_dir,
        kafka=KafkaSettings(
            bootstrap_servers=broker,
            partitions=3,
            replication_factor=int(os.environ.get("HSEPAY_TEST_KAFKA_REPLICATION", "1")),
            idempotence=os.environ.get("HSEPAY_TEST_KAFKA_IDEMPOTENCE", "false") == "true",
            orders_topic=f"orders-{suffix}",
            payment_status_topic=f"payment-status-{suffix}",
            group_prefix=f"test-{suffix}",
        ),
        relay=RelaySettings(poll_interval=0.5, standby_interval=0.2, purge_interval=3600),
        consumer=ConsumerSettings(batch_size=500, max_attempts=3),
        saga=SagaSettings(redrive_after=3600, redrive_interval=0.5),
    )


@pytest_asyncio.fixture
async def runtime(saga_settings, db_urls, payments_engine, orders_engine) -> Runtime:
    return Runtime(
        settings=saga_settings,
        db_urls=db_urls,
        engines={"payments": payments_engine, "orders": orders_engine},
    )


def with_settings(rt: Runtime, **changes) -> Runtime:
    return Runtime(settings=replace(rt.settings, **changes), db_urls=rt.db_urls, engines=rt.engines)


async def wait_final(orders_engine, order_ids, timeout: float = 30.0) -> dict[uuid.UUID, tuple[str, str | None]]:
    """Poll until every order left `created`; return {id: (status, reason)}."""
    ids = list(order_ids)
    deadline = time.monotonic() + timeout
    while True:
        async with orders_engine.connect() as conn:
            rows = (
                await conn.execute(select(orders.c.id, orders.c.status, orders.c.reason).where(orders.c.id.in_(ids)))
            ).all()
        result = {row.id: (row.status, row.reason) for row in rows}
        if len(result) == len(ids) and all(status != "created" for status, _ in result.values()):
            return result
        if time.monotonic() > deadline:
            pending = [i for i in ids if result.get(i, ("created",))[0] == "created"]
            raise AssertionError(f"{len(pending)} of {len(ids)} orders still created after {timeout}s")
        await asyncio.sleep(0.05)
