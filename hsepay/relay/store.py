"""Outbox and inbox tables (one pair per service database) and the statements that write them.

Generic: nothing here knows what an order or a payment is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import msgspec
import psycopg
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    any_,
    bindparam,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay import pgarray
from hsepay.relay.envelope import OutboxMessage

__all__ = [
    "OutboxStore",
    "PendingRow",
    "PipelineMisuse",
    "PostgresOutbox",
    "driver_connection",
    "enqueue",
    "enqueue_parameters",
    "enqueue_statement",
    "inbox_table",
    "notify_channel",
    "outbox_table",
    "pipeline",
]


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False, unique=True),
        Column("topic", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("event_type", Text, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True)),
        # The relay claims pending rows by id; this index stays as small as the backlog.
        Index("ix_outbox_pending", "id", postgresql_where=text("sent_at IS NULL")),
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
    )


INBOX_PROCESSED = "processed"
INBOX_QUARANTINED = "quarantined"


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", Uuid, nullable=False),
        Column("event_type", Text),
        Column("topic", Text, nullable=False),
        Column("partition", Integer, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("status", Text, nullable=False),
        Column("attempts", Integer, nullable=False, server_default="1"),
        Column("error", Text),
        # Kept only for quarantined messages, so that `hsepay inbox retry` can apply them later.
        Column("value", LargeBinary),
        Column("headers", JSONB),
        Column("key", Text),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("processed_at", DateTime(timezone=True)),
        PrimaryKeyConstraint("consumer", "event_id"),
        Index("ix_inbox_quarantined", "consumer", postgresql_where=text("status = 'quarantined'")),
        Index("ix_inbox_received_at", "received_at"),
    )


def notify_channel(outbox: Table) -> str:
    """The LISTEN/NOTIFY channel of an outbox: its database is the service's, so one name suffices.
    The trigger of migration 0003 builds the same name from the table's."""
    return f"hsepay_{outbox.name}"


_ENQUEUE = (
    "INSERT INTO {table} (event_id, topic, key, event_type, value, headers) "
    "SELECT e, t, k, et, v, h::jsonb FROM unnest("
    "%(event_ids)s::uuid[], %(topics)s::text[], %(keys)s::text[], %(event_types)s::text[], "
    "%(values)s::bytea[], %(headers)s::text[]) AS m(e, t, k, et, v, h)"
)
_json = msgspec.json.Encoder()


def enqueue_statement(outbox: Table) -> str:
    """The INSERT that writes `enqueue_parameters(messages)` into `outbox` (psycopg placeholders):
    one statement of fixed text whatever the number of messages, the rows as arrays. A multi-row
    VALUES (or an executemany) differs with every batch size, and psycopg parses such a statement
    anew each time (measured: 20 % of a consumer's CPU). Callers may embed it in a larger statement
    (a data-modifying WITH) so that a state change and its messages are one statement."""
    return _ENQUEUE.format(table=outbox.name)


def enqueue_parameters(messages: Sequence[OutboxMessage]) -> dict[str, str]:
    """The parameters of `enqueue_statement` for `messages`, in their order (which is the relay's)."""
    return {
        "event_ids": pgarray.uuids(m.event_id for m in messages),
        "topics": pgarray.texts([m.topic for m in messages]),
        "keys": pgarray.texts([m.key for m in messages]),
        "event_types": pgarray.texts([m.event_type for m in messages]),
        "values": pgarray.byteas(m.value for m in messages),
        "headers": pgarray.texts([_json.encode(m.headers).decode() for m in messages]),
    }


async def driver_connection(conn: AsyncConnection) -> psycopg.AsyncConnection:
    """The psycopg connection under a SQLAlchemy one, for statements of fixed text run as prepared
    statements without SQLAlchemy's compile and result layers (they stay in the caller's transaction)."""
    return (await conn.get_raw_connection()).driver_connection  # type: ignore[return-value]


class PipelineMisuse(RuntimeError):
    """A SQLAlchemy statement ran inside `pipeline`: it would have read an empty result."""


_PIPELINED = "hsepay.pipelined"


def _refuse_in_pipeline(conn, cursor, statement, parameters, context, executemany) -> None:
    if conn.info.get(_PIPELINED):
        raise PipelineMisuse(
            "a SQLAlchemy statement inside an inbox pipeline would read its result before the pipeline had it: "
            f"run it with driver_connection(conn) instead ({statement[:80]!r})"
        )


@contextlib.asynccontextmanager
async def pipeline(conn: AsyncConnection) -> AsyncIterator[None]:
    """Pipeline mode on `conn`'s driver connection for the block: statements run through
    `driver_connection` leave without waiting for each other, a round trip happens only where a
    result is read (and at COMMIT). Measured per statement on this box: ~0.1 ms of client CPU for
    the round trip alone (SELECT 1 over TCP), more in wall time on a loaded box.

    Only driver statements may run inside. SQLAlchemy reads a statement's result as soon as it is
    sent, which in a pipeline is before the result exists: it would see no rows. So a SQLAlchemy
    statement inside the block raises PipelineMisuse instead of silently reading nothing."""
    engine = conn.sync_engine
    if not event.contains(engine, "before_cursor_execute", _refuse_in_pipeline):
        event.listen(engine, "before_cursor_execute", _refuse_in_pipeline)
    driver = await driver_connection(conn)
    info = conn.sync_connection.info
    info[_PIPELINED] = True
    try:
        async with driver.pipeline():
            yield
    finally:
        info.pop(_PIPELINED, None)


async def enqueue(conn: AsyncConnection, outbox: Table, messages: Sequence[OutboxMessage]) -> None:
    """Write messages into the outbox inside the caller's transaction and wake the relay at commit."""
    if not messages:
        return
    driver = await driver_connection(conn)
    await driver.execute(enqueue_statement(outbox), enqueue_parameters(messages), prepare=True)
    # No pg_notify here: the outbox's statement trigger (migration 0003) sends it, delivered at
    # commit only, so the relay never wakes for a rolled-back row.


class PendingRow(Protocol):
    """An outbox row to publish; it unpacks as (id, topic, key, value, headers)."""

    def __iter__(self): ...

    def __getitem__(self, index: int): ...


class OutboxStore(Protocol):
    """What the relay needs of an outbox (PostgreSQL here; an in-memory one in unit tests)."""

    async def pending(self, limit: int) -> Sequence[PendingRow]: ...

    async def mark_sent(self, ids: Sequence[int]) -> None: ...

    async def purge_sent(self, older_than: float, limit: int) -> int: ...

    def on(self, connection: Any) -> OutboxStore:
        """The same outbox, read and marked through `connection` (the relay's lock session)."""
        ...


class PostgresOutbox:
    """An outbox table, read and marked by single autocommit statements.

    No BEGIN/COMMIT round trips around them: they are on the path of every message's latency.
    The engine's pool is shared; `on(session)` reads and marks through the relay's own session.
    """

    def __init__(self, engine: AsyncEngine, table: Table) -> None:
        self.table = table
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def on(self, connection: psycopg.AsyncConnection) -> OutboxStore:
        return _OutboxOnSession(self, connection)

    async def pending(self, limit: int) -> Sequence[PendingRow]:
        t = self.table
        async with self._autocommit.connect() as conn:
            result = await conn.execute(
                select(t.c.id, t.c.topic, t.c.key, t.c.value, t.c.headers)
                .where(t.c.sent_at.is_(None))
                .order_by(t.c.id)
                .limit(limit)
            )
            return result.all()

    async def mark_sent(self, ids: Sequence[int]) -> None:
        t = self.table
        async with self._autocommit.connect() as conn:
            await conn.execute(
                update(t).where(t.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger)))).values(sent_at=func.now()),
                {"ids": list(ids)},
            )

    async def purge_sent(self, older_than: float, limit: int) -> int:
        t = self.table
        expired = (
            select(t.c.id)
            .where(t.c.sent_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than))
            .limit(limit)
            .scalar_subquery()
        )
        async with self._autocommit.connect() as conn:
            result = await conn.execute(delete(t).where(t.c.id.in_(expired)))
        return result.rowcount


class _OutboxOnSession:
    """An outbox read and marked through one psycopg session in autocommit mode: the active relay's
    lock session. A statement there also proves the session (and the lock) is still held, and it
    skips the pool and the SQLAlchemy layer: measured 1.3 ms -> 0.3 ms per statement on the path
    of every message's latency."""

    def __init__(self, outbox: PostgresOutbox, connection: psycopg.AsyncConnection) -> None:
        self.outbox = outbox
        self.connection = connection
        name = outbox.table.name
        self._pending = f"SELECT id, topic, key, value, headers FROM {name} WHERE sent_at IS NULL ORDER BY id LIMIT %s"
        self._mark = f"UPDATE {name} SET sent_at = now() WHERE id = ANY(%s::bigint[])"

    async def pending(self, limit: int) -> Sequence[PendingRow]:
        cursor = await self.connection.execute(self._pending, (limit,))
        return await cursor.fetchall()

    async def mark_sent(self, ids: Sequence[int]) -> None:
        await self.connection.execute(self._mark, (pgarray.ints(ids),))

    async def purge_sent(self, older_than: float, limit: int) -> int:
        return await self.outbox.purge_sent(older_than, limit)

    def on(self, connection: psycopg.AsyncConnection) -> OutboxStore:
        return self.outbox.on(connection)
