"""Alembic, driven from code: each service has its own script directory and its own database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, create_engine

__all__ = ["alembic_config", "current_revision", "head_revision", "metadata_for", "revision_of", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


def metadata_for(service: str) -> MetaData:
    from hsepay import registry

    database = registry.get(service).database
    if database is None:
        raise registry.UnknownService(f"the {service} service has no database")
    return database.metadata


def alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(MIGRATIONS / service))
    config.set_main_option("version_locations", str(MIGRATIONS / service / "versions"))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    config.attributes["url"] = url
    config.attributes["service"] = service
    return config


def upgrade(service: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(service, url), revision)


def head_revision(service: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(service, "")).get_current_head()


def revision_of(connection: Connection) -> str | None:
    """The schema revision a database is at (None before the first migration)."""
    return MigrationContext.configure(connection).get_current_revision()


def current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return revision_of(conn)
    finally:
        engine.dispose()
