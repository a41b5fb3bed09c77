"""expire idempotency keys

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:54:23.000367
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain (not CONCURRENTLY) build keeps the migration in one transaction with its lock; the
    # table holds only idempotency keys, so inserts into it wait for seconds at most.
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
