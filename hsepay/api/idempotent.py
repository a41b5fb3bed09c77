"""Run a POST's effect and its Idempotency-Key record in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from litestar import Request, Response
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay import idempotency
from hsepay.api.guard import caller_of
from hsepay.bounded_db import BoundedDatabase
from hsepay.errors import InvalidRequest
from hsepay.idempotency import Claim, StoredResponse

__all__ = ["claim_for", "idempotency_key", "replayed", "run_idempotent"]

Effect = Callable[[AsyncConnection], Awaitable[StoredResponse]]


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, validated; two of them are a 400, not "the first one wins"."""
    keys = request.headers.getall("idempotency-key", [])
    if not keys:
        return None
    if len(keys) > 1:
        raise InvalidRequest("send one Idempotency-Key header, not several")
    return idempotency.validate_key(keys[0])


def claim_for(request: Request, resource: str, request_body: object) -> Claim | None:
    """The request's Idempotency-Key in its scope, or None without a key.

    `resource` is the canonical path (`/accounts/{str(uuid)}/deposit`), not the path as the client
    spelled it: one account written in upper case or without hyphens is still one scope. Keys are
    the caller's own (as Stripe's are per account): another caller's key of the same spelling is
    another key, neither a replay nor a 409 that tells it was used.
    """
    key = idempotency_key(request)
    if key is None:
        return None
    caller = caller_of(request).subject
    scope = f"{request.method} {resource}" if caller is None else f"{request.method} {resource} by {caller}"
    return Claim(scope, key, idempotency.request_fingerprint(scope, msgspec.json.encode(request_body)))


def replayed(stored: StoredResponse) -> Response:
    return Response(
        stored.body, status_code=stored.status_code, headers={**stored.headers, "Idempotent-Replayed": "true"}
    )


async def run_idempotent(
    request: Request, db: BoundedDatabase, table: Table, resource: str, request_body: object, effect: Effect
) -> Response:
    """Run `effect` once per Idempotency-Key and `resource` (see `claim_for`), in one transaction
    with the record of its answer."""
    claim = claim_for(request, resource, request_body)
    async with db.begin() as conn:
        if claim is not None:
            stored = await idempotency.claim(
                conn, table, scope=claim.scope, key=claim.key, request_hash=claim.request_hash
            )
            if stored is not None:
                return replayed(stored)
        response = await effect(conn)
        if claim is not None:
            await idempotency.record(conn, table, scope=claim.scope, key=claim.key, response=response)
    return Response(response.body, status_code=response.status_code, headers=response.headers)
