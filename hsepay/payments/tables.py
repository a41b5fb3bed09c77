"""The payments database. Money invariants live in constraints, not only in Python."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)

from hsepay.db import new_metadata
from hsepay.idempotency import idempotency_table
from hsepay.relay.store import inbox_table, outbox_table

metadata = new_metadata()

accounts = Table(
    "accounts",
    metadata,
    Column("user_id", Uuid, primary_key=True),  # one account per user, enforced by the key
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("balance >= 0", name="balance_not_negative"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", Uuid, ForeignKey("accounts.user_id"), nullable=False, index=True),
    Column("kind", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    # deposit: the deposit's id; debit: the order id. One debit per order, ever.
    Column("reference", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("kind IN ('deposit', 'debit')", name="kind_known"),
    CheckConstraint("amount > 0", name="amount_positive"),
    UniqueConstraint("kind", "reference"),
)

payment_decisions = Table(
    "payment_decisions",
    metadata,
    Column("order_id", Uuid, primary_key=True),  # the decision for an order is made once
    Column("user_id", Uuid, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("decided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('succeeded', 'failed')", name="status_known"),
    CheckConstraint("(status = 'failed') = (reason IS NOT NULL)", name="reason_iff_failed"),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
