"""Idempotency keys with Stripe semantics, stored in the same transaction as the effect.

Same key + same request: the stored response, no second effect. Same key + another request:
`IdempotencyKeyReused`. Concurrent requests with one key: the second INSERT waits on the first's
uncommitted row, then sees the stored response (or takes the key if the first rolled back).
Only successful responses are stored; a refused request had no effect, so repeating it is harmless.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, PrimaryKeyConstraint, Table, Text, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.errors import Conflict, InvalidRequest

__all__ = [
    "IdempotencyKeyReused",
    "StoredResponse",
    "claim",
    "idempotency_table",
    "record",
    "request_fingerprint",
]

MAX_KEY_LENGTH = 255


class IdempotencyKeyReused(Conflict):
    title = "Idempotency key reused"


def idempotency_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("scope", Text, nullable=False),
        Column("key", Text, nullable=False),
        Column("request_hash", Text, nullable=False),
        Column("status_code", Integer),
        Column("body", JSONB),
        Column("headers", JSONB),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("scope", "key"),
    )


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    body: Any
    headers: dict[str, str]


def request_fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


def validate_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidRequest(f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable characters")
    return key


async def claim(
    conn: AsyncConnection, table: Table, *, scope: str, key: str, request_hash: str
) -> StoredResponse | None:
    """Take the key for this transaction (None), or return the response stored under it."""
    inserted = await conn.execute(
        pg_insert(table)
        .values(scope=scope, key=key, request_hash=request_hash)
        .on_conflict_do_nothing()
        .returning(table.c.key)
    )
    if inserted.first() is not None:
        return None
    row = (
        await conn.execute(
            select(table.c.request_hash, table.c.status_code, table.c.body, table.c.headers).where(
                table.c.scope == scope, table.c.key == key
            )
        )
    ).one()
    if row.request_hash != request_hash:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
    return StoredResponse(status_code=row.status_code, body=row.body, headers=row.headers or {})


async def record(conn: AsyncConnection, table: Table, *, scope: str, key: str, response: StoredResponse) -> None:
    await conn.execute(
        update(table)
        .where(table.c.scope == scope, table.c.key == key)
        .values(status_code=response.status_code, body=response.body, headers=response.headers)
    )
