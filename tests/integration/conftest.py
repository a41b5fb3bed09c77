"""Saga fixtures: the real broker (embedded Tansu, or HSEPAY_TEST_KAFKA) and per-test topics/groups."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import pytest_asyncio
from sqlalchemy import select

from hsepay.config import Settings
from hsepay.orders.tables import orders
from hsepay.system import BrokerEndpoint
from tests.support import Saga, event_secrets_env


def saga_env(broker: str, data_dir, **overrides: str) -> dict[str, str]:
    """The environment a saga test runs under: its own topics and consumer groups on the shared broker."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "HSEPAY_DATA_DIR": str(data_dir),
        "HSEPAY_KAFKA": broker,
        "HSEPAY_KAFKA_PARTITIONS": "3",
        "HSEPAY_KAFKA_REPLICATION": os.environ.get("HSEPAY_TEST_KAFKA_REPLICATION", "1"),
        "HSEPAY_KAFKA_IDEMPOTENCE": os.environ.get("HSEPAY_TEST_KAFKA_IDEMPOTENCE", "false"),
        "HSEPAY_ORDERS_TOPIC": f"orders-{suffix}",
        "HSEPAY_PAYMENT_STATUS_TOPIC": f"payment-status-{suffix}",
        "HSEPAY_GROUP_PREFIX": f"test-{suffix}",
        "HSEPAY_RELAY_POLL": "0.5",
        "HSEPAY_RELAY_STANDBY_INTERVAL": "0.2",
        "HSEPAY_OUTBOX_PURGE_INTERVAL": "3600",
        "HSEPAY_CONSUMER_MAX_ATTEMPTS": "3",
        "HSEPAY_REDRIVE_AFTER": "3600",
        "HSEPAY_REDRIVE_INTERVAL": "0.5",
        **event_secrets_env(),
        **overrides,
    }


@pytest.fixture
def saga_environ(broker, data_dir, db_urls) -> dict[str, str]:
    """The test's environment: what its in-process workers read, and what its subprocesses get."""
    return {
        **saga_env(broker, data_dir),
        "HSEPAY_PAYMENTS_DB": db_urls["payments"],
        "HSEPAY_ORDERS_DB": db_urls["orders"],
    }


@pytest.fixture
def saga_settings(saga_environ) -> Settings:
    """Settings for one test, read from an environment the way production reads them."""
    return Settings.from_env(saga_environ)


@pytest_asyncio.fixture
async def saga(saga_settings, db_urls, payments_engine, orders_engine) -> Saga:
    kafka = saga_settings.kafka
    return Saga(
        settings=saga_settings,
        db_urls=db_urls,
        engines={"payments": payments_engine, "orders": orders_engine},
        broker=BrokerEndpoint(kafka.bootstrap_servers, bool(kafka.idempotence), embedded=False),
    )


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
