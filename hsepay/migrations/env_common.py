"""Shared body of both Alembic environments (online migrations only: hsepay always has a URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from hsepay.db import session_defaults
from hsepay.migrate import claim, metadata_for, version_table


def migrate_online(service: str) -> None:
    config = context.config
    url = config.attributes.get("url")
    if not url:
        raise RuntimeError("hsepay migrations need a URL; run them through `hsepay db upgrade`")
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection, service)
        return
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=session_defaults(url))
    try:
        with engine.connect() as conn:
            _migrate(conn, service)
    finally:
        engine.dispose()


def _migrate(connection, service: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata_for(service),
        version_table=version_table(service),
        compare_type=True,
        compare_server_default=True,
        # Hold a lock for the run so two `hsepay db upgrade` in parallel cannot interleave.
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.execute("SELECT pg_advisory_xact_lock(hashtext('hsepay.migrations'))")
        claim(connection, service, context.config.attributes.get("variable", service))
        context.run_migrations()
