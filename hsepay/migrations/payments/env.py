"""Alembic environment of the payments database; the URL comes from hsepay's settings (see hsepay.migrate)."""

from hsepay.migrations.env_common import migrate_online

migrate_online("payments")
