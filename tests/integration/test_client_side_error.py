"""A statement libpq refuses to send (more than 65535 bind parameters) is a bug in the request, not
an unavailable database: psycopg raises it as an OperationalError without a SQLSTATE, the shape of
a lost connection, so before issue 22's fix it answered 503, opened the API's breaker and logged
"lost primary" for a server that was fine."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import ProgrammingError

from hsepay.bounded_db import BoundedDatabase
from hsepay.db import create_engine
from hsepay.primary import watch_of
from hsepay.resilience import is_unavailable

TOO_MANY = 70_000  # the protocol's limit is 65535 parameters


async def test_too_many_bind_parameters_is_a_bug_not_an_outage(db_urls):
    engine = create_engine(db_urls["payments"], pool_size=1, application_name="hsepay-client-side-test")
    db = BoundedDatabase(engine)
    try:
        async with db.unit() as conn:  # the watch has its primary
            await conn.exec_driver_sql("SELECT 1")
        statement = "SELECT 1 WHERE 0 IN (" + ", ".join(["%s"] * TOO_MANY) + ")"
        with pytest.raises(ProgrammingError) as caught:
            async with db.unit() as conn:
                await conn.exec_driver_sql(statement, tuple(range(TOO_MANY)))
        assert "number of parameters" in str(caught.value)
        assert not is_unavailable(caught.value)
        assert db.silent_since is None and db.trips == 0
        watch = watch_of("client-side-test")
        assert watch.available and watch.lost_at is None
        async with db.unit() as conn:  # the connection, back in the pool, still works
            assert (await conn.exec_driver_sql("SELECT 2")).scalar_one() == 2
    finally:
        await db.close()
        await engine.dispose()
