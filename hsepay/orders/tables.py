"""The orders database."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, Index, Integer, Table, Text, Uuid, func, text

from hsepay.db import new_metadata
from hsepay.idempotency import idempotency_table
from hsepay.money import MAX_AMOUNT
from hsepay.orders.model import MAX_DESCRIPTION
from hsepay.relay.store import inbox_table, outbox_table

metadata = new_metadata()

orders = Table(
    "orders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("status", Text, nullable=False, server_default="created"),
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # When the payment request was last (re-)sent; drives the re-drive of stuck orders.
    Column("payment_requested_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("payment_requests", Integer, nullable=False, server_default="1"),
    CheckConstraint(f"amount BETWEEN 1 AND {MAX_AMOUNT}", name="amount_in_range"),
    CheckConstraint(f"char_length(description) <= {MAX_DESCRIPTION}", name="description_length"),
    CheckConstraint("status IN ('created', 'success', 'failed')", name="status_known"),
    CheckConstraint("(status = 'failed') = (reason IS NOT NULL)", name="reason_iff_failed"),
    Index("ix_orders_created_at_id", "created_at", "id"),
    Index("ix_orders_user_id_created_at_id", "user_id", "created_at", "id"),
    Index("ix_orders_pending", "payment_requested_at", postgresql_where=text("status = 'created'")),
)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
