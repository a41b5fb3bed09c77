"""Each service's migration history builds its schema from nothing and matches the models."""

from __future__ import annotations

import pytest
from alembic import command

from hsepay import migrate
from tests.conftest import SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_upgrade_from_empty_then_models_match(service, empty_database):
    assert migrate.current_revision(empty_database) is None
    migrate.upgrade(service, empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision(service)
    # Raises if autogenerate would emit any operation: the models and the migrations agree.
    command.check(migrate.alembic_config(service, empty_database))
    # Running it again on a migrated database is a no-op, as `hsepay up` does on every start.
    migrate.upgrade(service, empty_database)


@pytest.mark.parametrize("service", SERVICES)
def test_downgrade_to_base_and_back(service, empty_database):
    migrate.upgrade(service, empty_database)
    command.downgrade(migrate.alembic_config(service, empty_database), "base")
    assert migrate.current_revision(empty_database) is None
    migrate.upgrade(service, empty_database)
    assert migrate.current_revision(empty_database) == migrate.head_revision(service)
