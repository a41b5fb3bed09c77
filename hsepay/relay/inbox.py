"""The inbox transaction: record each event id and apply the new events, in the caller's transaction.

A duplicate event id hits the inbox primary key `(consumer, event_id)` and is skipped, so an
event's effect happens once however often it is delivered. Poison is recorded as a quarantined
inbox row with its bytes and error, so it can be retried later and is never applied twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay import pgarray
from hsepay.relay.inbound import Message, Poison, Ready, Refused, storable_text
from hsepay.relay.store import INBOX_PROCESSED, INBOX_QUARANTINED, driver_connection

__all__ = ["Applied", "apply_in", "purge_processed"]

MAX_ERROR_CHARS = 2000


# Fixed text whatever the batch size, the rows as arrays: psycopg parses it once (a multi-row
# VALUES differs with every batch size and was parsed anew each time: 20 % of a consumer's CPU).
_RECORD_PROCESSED = (
    'INSERT INTO {table} (consumer, event_id, event_type, topic, partition, "offset", status, processed_at) '
    "SELECT %(consumer)s, e, et, t, p, o, 'processed', now() FROM unnest("
    "%(event_ids)s::uuid[], %(event_types)s::text[], %(topics)s::text[], "
    "%(partitions)s::integer[], %(offsets)s::bigint[]) AS m(e, et, t, p, o) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


_QUARANTINE_REFUSED = (
    "UPDATE {table} SET status = '" + INBOX_QUARANTINED + "', attempts = %(attempts)s, error = %(error)s, "
    "value = %(value)s, headers = %(headers)s, key = %(key)s, processed_at = NULL "
    "WHERE consumer = %(consumer)s AND event_id = %(event_id)s"
)


@dataclass(frozen=True, slots=True)
class Applied:
    processed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    refused: tuple[Refused, ...] = ()
    """Events their handler refused (counted in `quarantined`)."""


def _row(consumer: str, message: Message, event_id: Any, event_type: str | None) -> dict[str, Any]:
    return {
        "consumer": consumer,
        "event_id": event_id,
        "event_type": event_type,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }


async def apply_in(
    conn: AsyncConnection, inbox: Table, consumer: str, items: Sequence[Ready | Poison], *, attempts: int = 1
) -> Applied:
    """Record `items` in the inbox and run the handlers on the new ones, in `conn`'s transaction."""
    poison = [i for i in items if isinstance(i, Poison)]
    ready = [i for i in items if isinstance(i, Ready)]
    quarantined = 0
    if poison:
        # executemany form: SQLAlchemy compiles the statement once and batches the rows
        # (a multi-row .values([...]) is compiled anew for every batch size: measured 20% of CPU).
        result = await conn.execute(
            pg_insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id),
            [
                {
                    **_row(consumer, p.message, p.event_id, p.event_type),
                    "status": INBOX_QUARANTINED,
                    "attempts": attempts,
                    "error": storable_text(p.error[:MAX_ERROR_CHARS]),
                    "value": p.message.value,
                    "headers": p.message.headers,
                    "key": p.message.key,
                }
                for p in poison
            ],
        )
        quarantined = len(result.all())
    fresh: list[Ready] = []
    if ready:
        # A prepared statement on the driver connection: it may run in a pipeline (no SQLAlchemy
        # statement may: it would read an empty result before the pipeline had it).
        driver = await driver_connection(conn)
        result = await driver.execute(
            _RECORD_PROCESSED.format(table=inbox.name),
            {
                "consumer": consumer,
                "event_ids": pgarray.uuids(r.event_id for r in ready),
                "event_types": pgarray.texts([r.event_type for r in ready]),
                "topics": pgarray.texts([r.message.topic for r in ready]),
                "partitions": pgarray.ints(r.message.partition for r in ready),
                "offsets": pgarray.ints(r.message.offset for r in ready),
            },
            prepare=True,
        )
        new_ids = {row[0] for row in await result.fetchall()}
        fresh = [r for r in ready if r.event_id in new_ids]
    # Consecutive events of one handler go to it together, in arrival order (two event types with
    # one `apply`, payment.succeeded and payment.failed, count as one handler).
    refused: list[Refused] = []
    for _, group in itertools.groupby(fresh, key=lambda r: r.handler.apply):
        run = list(group)
        refused.extend(await run[0].handler.apply(conn, [r.event for r in run]) or ())
    if refused:
        await _quarantine_refused(conn, inbox, consumer, {r.event_id: r for r in fresh}, refused, attempts)
    return Applied(
        processed=len(fresh) - len(refused),
        duplicates=len(ready) - len(fresh),
        quarantined=quarantined + len(refused),
        refused=tuple(refused),
    )


async def _quarantine_refused(
    conn: AsyncConnection,
    inbox: Table,
    consumer: str,
    fresh: dict[Any, Ready],
    refused: Sequence[Refused],
    attempts: int,
) -> None:
    """Turn the rows just recorded as processed into quarantined ones, with the handler's reason."""
    # A driver statement, like the record above: this runs inside the consumer's pipeline.
    driver = await driver_connection(conn)
    for refusal in refused:
        message = fresh[refusal.event_id].message
        await driver.execute(
            _QUARANTINE_REFUSED.format(table=inbox.name),
            {
                "attempts": attempts,
                "error": storable_text(refusal.reason[:MAX_ERROR_CHARS]),
                "value": message.value,
                "headers": Jsonb(dict(message.headers)),
                "key": message.key,
                "consumer": consumer,
                "event_id": refusal.event_id,
            },
            prepare=True,
        )


async def purge_processed(conn: AsyncConnection, inbox: Table, consumer: str, *, older_than: float, limit: int) -> int:
    """Forget processed inbox rows older than `older_than` seconds (quarantined ones stay)."""
    expired = (
        select(inbox.c.event_id)
        .where(
            inbox.c.consumer == consumer,
            inbox.c.status == INBOX_PROCESSED,
            inbox.c.received_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than),
        )
        .limit(limit)
        .scalar_subquery()
    )
    result = await conn.execute(delete(inbox).where(inbox.c.consumer == consumer, inbox.c.event_id.in_(expired)))
    return result.rowcount
