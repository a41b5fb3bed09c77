"""Alembic, driven from code: each service has its own script directory, its own database, and
its own version table (`alembic_version_<service>`).

Own version tables make a misconfiguration loud: two services pointed at one database can never
share one version table and report "at head" for a schema that was never created. Before
migrating, `claim` refuses a database that holds another service's tables, and adopts the revision
of a database migrated before version tables were per service (the shared `alembic_version`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, MetaData, create_engine, inspect, text

from hsepay.config import ConfigError
from hsepay.db import session_defaults

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEADS",
    "ForeignSchema",
    "foreign_services",
    "refuse_foreign",
    "alembic_config",
    "claim",
    "current_revision",
    "head_revision",
    "metadata_for",
    "scripted_head",
    "revision_of",
    "upgrade",
    "version_table",
]

MIGRATIONS = Path(__file__).parent / "migrations"
HEADS = {"payments": "0003", "orders": "0003"}
"""The newest revision of each history, so that checking a schema (every command that reads a
database) needs no Alembic, whose import costs ~0.25 s; Alembic itself is loaded only to migrate.
tests/unit/test_layers.py fails when a migration is added and this is not updated."""
LEGACY_VERSION_TABLE = "alembic_version"
GENERIC_TABLES = frozenset({"outbox", "inbox", "idempotency_keys"})


class ForeignSchema(ConfigError):
    """A service's database already holds another service's schema."""


def version_table(service: str) -> str:
    return f"alembic_version_{service}"


def _own_tables(service: str) -> set[str]:
    """The tables only this service has (the outbox, inbox and key tables exist in every service)."""
    return {name for name in metadata_for(service).tables if name not in GENERIC_TABLES}


def foreign_services(connection: Connection, service: str) -> list[str]:
    from hsepay import registry

    tables = set(inspect(connection).get_table_names())
    return [
        other.name
        for other in registry.with_database()
        if other.name != service and (version_table(other.name) in tables or _own_tables(other.name) & tables)
    ]


def refuse_foreign(connection: Connection, service: str, variable: str) -> None:
    """Raise ForeignSchema if the database holds another service's tables (read-only)."""
    foreign = foreign_services(connection, service)
    if foreign:
        database = connection.exec_driver_sql("SELECT current_database()").scalar_one()
        raise ForeignSchema(
            f"{variable}: database {database!r} already holds the {' and '.join(foreign)} schema; "
            f"each service needs a database of its own"
        )


def claim(connection: Connection, service: str, variable: str) -> None:
    """Make sure this database is `service`'s: refuse another service's, adopt a legacy version row."""
    refuse_foreign(connection, service, variable)
    tables = set(inspect(connection).get_table_names())
    own = version_table(service)
    if own in tables or LEGACY_VERSION_TABLE not in tables or not _own_tables(service) & tables:
        return
    from alembic.runtime.migration import MigrationContext

    legacy = MigrationContext.configure(connection).get_current_revision()
    if legacy is None:
        return
    # The same DDL Alembic uses for a version table, with the revision this database already has.
    connection.execute(text(f"CREATE TABLE {own} (version_num VARCHAR(32) NOT NULL, PRIMARY KEY (version_num))"))
    connection.execute(text(f"INSERT INTO {own} (version_num) VALUES (:revision)"), {"revision": legacy})
    connection.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))


def metadata_for(service: str) -> MetaData:
    from hsepay import registry

    database = registry.get(service).database
    if database is None:
        raise registry.UnknownService(f"the {service} service has no database")
    return database.metadata


def alembic_config(service: str, url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(MIGRATIONS / service))
    config.set_main_option("version_locations", str(MIGRATIONS / service / "versions"))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["url"] = url
    config.attributes["service"] = service
    return config


def upgrade(service: str, url: str, revision: str = "head", *, variable: str | None = None) -> None:
    from alembic import command

    config = alembic_config(service, url)
    config.attributes["variable"] = variable or service
    command.upgrade(config, revision)


def head_revision(service: str) -> str:
    """The revision a current schema of `service` is at."""
    return HEADS[service]


def scripted_head(service: str) -> str | None:
    """The head of `service`'s migration scripts, as Alembic reads them (what HEADS must say)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(service, "")).get_current_head()


def revision_of(connection: Connection, service: str) -> str | None:
    """The schema revision of `service` a database is at (None before its first migration): the one
    row of the service's Alembic version table, read without loading Alembic."""
    table = version_table(service)
    if not inspect(connection).has_table(table):
        return None
    return connection.execute(text(f"SELECT version_num FROM {table}")).scalar()


def current_revision(service: str, url: str) -> str | None:
    engine = create_engine(url, connect_args=session_defaults(url))
    try:
        with engine.connect() as conn:
            return revision_of(conn, service)
    finally:
        engine.dispose()
