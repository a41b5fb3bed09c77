"""The group read behind GET /order/{id}, on the real orders database: concurrent lookups share
queries and each gets its own order; a connection that dies fails its batch alone (the API answers
503) and the next lookup works on a fresh one."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from hsepay.db import create_engine
from hsepay.group_read import GroupRead
from hsepay.orders.operations import NewOrder, create_orders, find_orders
from hsepay.resilience import is_unavailable


async def _place(engine, count: int):
    async with engine.begin() as conn:
        return await create_orders(conn, [NewOrder(uuid.uuid4(), i + 1, f"o{i}") for i in range(count)], topic="t")


async def test_concurrent_lookups_share_queries_and_each_gets_its_own_order(orders_engine):
    placed = await _place(orders_engine, 30)
    reader = GroupRead(orders_engine, find_orders, connections=1)
    missing = uuid.uuid4()
    try:
        found = await asyncio.gather(*(reader.get(order.id) for order in placed), reader.get(missing))
    finally:
        await reader.close()
    assert found[:-1] == placed and found[-1] is None
    assert reader.items == 31 and reader.batches < 31  # the first went alone, the rest waited together


async def test_a_dead_connection_fails_its_batch_and_the_next_lookup_works(db_urls, pg_server):
    engine = create_engine(db_urls["orders"], pool_size=2, application_name="hsepay-group-read-test")
    reader = GroupRead(engine, find_orders, connections=1)
    try:
        (order,) = await _place(engine, 1)
        assert await reader.get(order.id) == order  # the reader now holds its connection
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                ("hsepay-group-read-test",),
            )
        with pytest.raises(Exception) as failed:
            await reader.get(order.id)
        assert is_unavailable(failed.value)  # what the API answers 503 for
        assert await reader.get(order.id) == order
    finally:
        await reader.close()
        await engine.dispose()
