"""notify the relay from a statement trigger on the outbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:40:00

Every transaction that writes outbox rows used to send `SELECT pg_notify(...)` itself: one round
trip more per transaction on the hot path, and a writer that forgot it left the relay waiting for
its poll. A statement-level trigger sends it once per INSERT statement, whoever writes; PostgreSQL
still delivers it only at commit, and folds repeats within a transaction into one.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The channel is relay.store.notify_channel(outbox): "hsepay_" + the table name.
CREATE_FUNCTION = """
CREATE FUNCTION hsepay_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hsepay_' || TG_TABLE_NAME, '');
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(CREATE_FUNCTION)
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION hsepay_notify_outbox()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION hsepay_notify_outbox()")
