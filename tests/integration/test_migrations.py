"""Each service's migration history builds its schema from nothing and matches the models."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from hsepay import migrate
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
