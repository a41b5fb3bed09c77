"""Each service's migration history builds its schema from nothing and matches the models."""

from __future__ import annotations

import psycopg
import pytest
from alembic import command
from sqlalchemy import create_engine, text

from hsepay import migrate
from hsepay.db import libpq_conninfo
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.relay.envelope import new_message
from hsepay.relay.store import enqueue, notify_channel
from tests.conftest import SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_upgrade_from_empty_then_models_match(service, empty_database):
    assert migrate.current_revision(service, empty_database) is None
    migrate.upgrade(service, empty_database)
    assert migrate.current_revision(service, empty_database) == migrate.head_revision(service)
    # Raises if autogenerate would emit any operation: the models and the migrations agree.
    command.check(migrate.alembic_config(service, empty_database))
    # Running it again on a migrated database is a no-op, as `hsepay up` does on every start.
    migrate.upgrade(service, empty_database)


@pytest.mark.parametrize("service", SERVICES)
def test_downgrade_to_base_and_back(service, empty_database):
    migrate.upgrade(service, empty_database)
    command.downgrade(migrate.alembic_config(service, empty_database), "base")
    assert migrate.current_revision(service, empty_database) is None
    migrate.upgrade(service, empty_database)
    assert migrate.current_revision(service, empty_database) == migrate.head_revision(service)


def test_each_service_keeps_its_own_version_table(empty_database):
    migrate.upgrade("payments", empty_database)
    assert migrate.current_revision("payments", empty_database) == migrate.head_revision("payments")
    assert migrate.current_revision("orders", empty_database) is None  # not "at head" by someone else's row


def test_a_database_holding_another_services_schema_is_refused(empty_database):
    migrate.upgrade("payments", empty_database)
    with pytest.raises(migrate.ForeignSchema, match="HSEPAY_ORDERS_DB: database .* already holds the payments schema"):
        migrate.upgrade("orders", empty_database, variable="HSEPAY_ORDERS_DB")
    assert migrate.current_revision("orders", empty_database) is None


def test_a_database_migrated_with_the_shared_version_table_is_adopted(empty_database):
    """Databases migrated before version tables were per service carry `alembic_version`."""
    migrate.upgrade("orders", empty_database)
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE alembic_version_orders RENAME TO alembic_version"))
    finally:
        engine.dispose()
    assert migrate.current_revision("orders", empty_database) is None
    migrate.upgrade("orders", empty_database)  # adopts the legacy row, runs nothing twice
    assert migrate.current_revision("orders", empty_database) == migrate.head_revision("orders")
    command.check(migrate.alembic_config("orders", empty_database))


async def test_an_outbox_write_wakes_the_relay_at_commit_and_only_then(db_urls, orders_engine):
    """Migration 0003's trigger: whoever writes the outbox, a LISTENer hears it once it commits."""
    listener = await psycopg.AsyncConnection.connect(libpq_conninfo(db_urls["orders"]), autocommit=True)
    try:
        await listener.execute(f'LISTEN "{notify_channel(orders_outbox)}"')

        async def heard() -> int:
            return len([n async for n in listener.notifies(timeout=1.0)])

        message = new_message(topic="t", key="k", event_type="x", data={}, correlation_id="c")
        with pytest.raises(RuntimeError):
            async with orders_engine.begin() as conn:
                await enqueue(conn, orders_outbox, [message])
                raise RuntimeError("roll back")
        assert await heard() == 0
        async with orders_engine.begin() as conn:
            await enqueue(conn, orders_outbox, [message])
        assert await heard() == 1
    finally:
        await listener.close()
