"""Quarantined messages: what operators see (`hsepay inbox status`) and how they re-apply them."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay.relay.inbound import HandlerMap, Message, Poison, Ready, decode, storable_text
from hsepay.relay.inbox import MAX_ERROR_CHARS
from hsepay.relay.signing import EventVerifier
from hsepay.relay.store import INBOX_PROCESSED, INBOX_QUARANTINED

__all__ = ["inbox_status", "retry_quarantined"]


class _StillRefused(Exception):
    """A retried event its handler refuses again (raised to roll its savepoint back)."""


async def inbox_status(conn: AsyncConnection, inbox: Table, consumer: str, *, show: int = 20) -> dict[str, Any]:
    """Counts per status and the newest quarantined messages with their errors."""
    counts = {
        row.status: row.n
        for row in await conn.execute(
            select(inbox.c.status, func.count().label("n")).where(inbox.c.consumer == consumer).group_by(inbox.c.status)
        )
    }
    quarantined = [
        {
            "event_id": str(row.event_id),
            "event_type": row.event_type,
            "topic": row.topic,
            "partition": row.partition,
            "offset": row.offset,
            "attempts": row.attempts,
            "error": row.error,
            "received_at": row.received_at.isoformat(),
        }
        for row in await conn.execute(
            select(inbox)
            .where(inbox.c.consumer == consumer, inbox.c.status == INBOX_QUARANTINED)
            .order_by(inbox.c.received_at.desc())
            .limit(show)
        )
    ]
    return {
        "processed": counts.get(INBOX_PROCESSED, 0),
        "quarantined": counts.get(INBOX_QUARANTINED, 0),
        "quarantined_recent": quarantined,
    }


async def retry_quarantined(
    engine: AsyncEngine,
    inbox: Table,
    *,
    consumer: str,
    handlers: HandlerMap,
    event_ids: Sequence[uuid.UUID] | None = None,
    verifier: EventVerifier | None = None,
) -> tuple[int, int]:
    """Apply quarantined messages again; returns (now processed, still quarantined).

    Each message is applied in a savepoint of one transaction that holds the rows (SKIP LOCKED, so
    two operators retrying at once do not apply a message twice).
    """
    done = failed = 0
    async with engine.begin() as conn:
        query = (
            select(inbox)
            .where(inbox.c.consumer == consumer, inbox.c.status == INBOX_QUARANTINED)
            .order_by(inbox.c.received_at)
            .with_for_update(skip_locked=True)
        )
        if event_ids:
            query = query.where(inbox.c.event_id.in_(event_ids))
        rows = (await conn.execute(query)).all()
        for row in rows:
            message = Message(row.topic, row.partition, row.offset, row.key, row.value, row.headers or {})
            # The signature is judged as of the message's arrival: a retry after a fix of the secrets
            # is not refused as a replay for the time it spent in quarantine.
            verify = None if verifier is None else functools.partial(verifier.verify, now=row.received_at.timestamp())
            item = decode(message, handlers, verify)
            where = (inbox.c.consumer == consumer) & (inbox.c.event_id == row.event_id)
            error = item.error if isinstance(item, Poison) else None
            if isinstance(item, Ready):
                try:
                    async with conn.begin_nested():
                        refused = await item.handler.apply(conn, [item.event])
                        if refused:  # still contradicts the service's facts: undo, keep it quarantined
                            raise _StillRefused(refused[0].reason)
                except _StillRefused as exc:
                    error = str(exc)
                except Exception as exc:  # still failing: keep it quarantined with the new error
                    error = repr(exc)
            if error is None:
                await conn.execute(
                    update(inbox).where(where).values(status=INBOX_PROCESSED, error=None, processed_at=func.now())
                )
                done += 1
            else:
                await conn.execute(
                    update(inbox)
                    .where(where)
                    .values(attempts=inbox.c.attempts + 1, error=storable_text(error[:MAX_ERROR_CHARS]))
                )
                failed += 1
    return done, failed
