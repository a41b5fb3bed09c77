"""What an operator sees of an outbox (`hsepay outbox status`): pending rows, their age, the active relay."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.relay.leadership import relay_lock_key

__all__ = ["outbox_status"]

_RELAY_HOLDER = text(
    "SELECT a.application_name, a.client_addr::text AS client_addr, a.pid, a.backend_start "
    "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()) "
    # A one-bigint advisory key shows as classid = high 32 bits, objid = low 32 bits, objsubid = 1.
    "AND l.objsubid = 1 "
    "AND l.classid::bigint = ((hashtext(:key)::bigint >> 32) & 4294967295) "
    "AND l.objid::bigint = (hashtext(:key)::bigint & 4294967295)"
)


async def outbox_status(conn: AsyncConnection, outbox: Table) -> dict[str, Any]:
    # EXTRACT returns numeric (a Decimal), which --json would print as a string: make it a float.
    pending_by_topic = {
        row.topic: {"pending": row.pending, "oldest_age_s": round(float(row.age or 0), 3)}
        for row in await conn.execute(
            select(
                outbox.c.topic,
                func.count().label("pending"),
                func.extract("epoch", func.now() - func.min(outbox.c.created_at)).label("age"),
            )
            .where(outbox.c.sent_at.is_(None))
            .group_by(outbox.c.topic)
        )
    }
    sent_retained = (
        await conn.execute(select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_not(None)))
    ).scalar_one()
    holder = (await conn.execute(_RELAY_HOLDER, {"key": relay_lock_key(outbox)})).first()
    return {
        "pending": sum(t["pending"] for t in pending_by_topic.values()),
        "oldest_pending_age_s": max((t["oldest_age_s"] for t in pending_by_topic.values()), default=None),
        "topics": pending_by_topic,
        "sent_retained": sent_retained,
        "active_relay": (
            {"application_name": holder.application_name, "pid": holder.pid, "since": holder.backend_start.isoformat()}
            if holder
            else None
        ),
    }
