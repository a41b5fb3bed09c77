"""Idempotency keys with Stripe semantics, stored in the same transaction as the effect.

Same key + same request: the stored response, no second effect. Same key + another request:
`IdempotencyKeyReused`. Concurrent requests with one key: the second INSERT waits on the first's
uncommitted row, then sees the stored response (or takes the key if the first rolled back).
Only successful responses are stored; a refused request had no effect, so repeating it is harmless.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.errors import Conflict, InvalidRequest

__all__ = [
    "Claim",
    "IdempotencyKeyReused",
    "StoredResponse",
    "claim",
    "claim_many",
    "idempotency_table",
    "purge_expired",
    "record",
    "record_many",
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
        Index("ix_idempotency_keys_created_at", "created_at"),
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
    """The key, stripped; 400 unless 1..255 printable characters without a comma.

    No comma, because an intermediary may fold two Idempotency-Key headers into one line joined by
    commas (RFC 9110 §5.3): two keys must never pass for one.
    """
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or "," in key:
        raise InvalidRequest(f"Idempotency-Key must be 1..{MAX_KEY_LENGTH} printable characters, without commas")
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


@dataclass(frozen=True, slots=True)
class Claim:
    """One request's Idempotency-Key, in its scope, with the fingerprint of the request it came with."""

    scope: str
    key: str
    request_hash: str


async def claim_many(
    conn: AsyncConnection, table: Table, claims: Sequence[Claim]
) -> list[StoredResponse | IdempotencyKeyReused | None]:
    """`claim` for a batch, in two statements whatever its size: per claim None (taken for this
    transaction), the stored response (a replay), or IdempotencyKeyReused. No two claims of a
    batch may share a scope and key (the batcher defers the later one to the next batch)."""
    if not claims:
        return []
    taken = {
        (row.scope, row.key)
        for row in await conn.execute(
            text(
                f"INSERT INTO {table.name} (scope, key, request_hash) "
                "SELECT * FROM unnest(CAST(:scopes AS text[]), CAST(:keys AS text[]), CAST(:hashes AS text[])) "
                "ON CONFLICT DO NOTHING RETURNING scope, key"
            ),
            {
                "scopes": [c.scope for c in claims],
                "keys": [c.key for c in claims],
                "hashes": [c.request_hash for c in claims],
            },
        )
    }
    others = [c for c in claims if (c.scope, c.key) not in taken]
    stored = {}
    if others:
        stored = {
            (row.scope, row.key): row
            for row in await conn.execute(
                select(
                    table.c.scope, table.c.key, table.c.request_hash, table.c.status_code, table.c.body, table.c.headers
                ).where(tuple_(table.c.scope, table.c.key).in_([(c.scope, c.key) for c in others]))
            )
        }
    results: list[StoredResponse | IdempotencyKeyReused | None] = []
    for c in claims:
        if (c.scope, c.key) in taken:
            results.append(None)
            continue
        row = stored[(c.scope, c.key)]
        if row.request_hash != c.request_hash:
            results.append(IdempotencyKeyReused("this Idempotency-Key was used with a different request"))
        else:
            results.append(StoredResponse(status_code=row.status_code, body=row.body, headers=row.headers or {}))
    return results


async def record_many(conn: AsyncConnection, table: Table, answered: Sequence[tuple[Claim, StoredResponse]]) -> None:
    """`record` for a batch (one executemany)."""
    if not answered:
        return
    await conn.execute(
        update(table)
        .where(table.c.scope == bindparam("b_scope"), table.c.key == bindparam("b_key"))
        .values(status_code=bindparam("b_status"), body=bindparam("b_body"), headers=bindparam("b_headers")),
        [
            {
                "b_scope": c.scope,
                "b_key": c.key,
                "b_status": r.status_code,
                "b_body": r.body,
                "b_headers": r.headers,
            }
            for c, r in answered
        ],
    )


async def record(conn: AsyncConnection, table: Table, *, scope: str, key: str, response: StoredResponse) -> None:
    await conn.execute(
        update(table)
        .where(table.c.scope == scope, table.c.key == key)
        .values(status_code=response.status_code, body=response.body, headers=response.headers)
    )


async def purge_expired(conn: AsyncConnection, table: Table, *, older_than: float, limit: int = 10_000) -> int:
    """Forget keys older than `older_than` seconds (Stripe keeps them 24 hours); returns how many.

    After that a repeated request with an old key is a new request: clients retry within minutes,
    and the money effects stay unique on their own keys (order ids, deposit references).
    """
    expired = (
        select(table.c.scope, table.c.key)
        .where(table.c.created_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than))
        .limit(limit)
    )
    result = await conn.execute(delete(table).where(tuple_(table.c.scope, table.c.key).in_(expired)))
    return result.rowcount
