"""relay.store.pipeline: driver statements leave together; a SQLAlchemy statement inside would read
an empty result (it reads before the pipeline has one), so it is refused loudly instead."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from hsepay.relay.store import PipelineMisuse, driver_connection, pipeline


async def test_driver_statements_run_and_sqlalchemy_ones_are_refused_inside(orders_engine):
    async with orders_engine.connect() as conn:
        async with pipeline(conn), conn.begin():
            driver = await driver_connection(conn)
            first = await driver.execute("SELECT 1")
            second = await driver.execute("SELECT 2")
            assert (await first.fetchall(), await second.fetchall()) == ([(1,)], [(2,)])
            with pytest.raises(PipelineMisuse):
                await conn.execute(text("SELECT 3"))
        assert (await conn.execute(text("SELECT 4"))).scalar_one() == 4  # outside, as ever
