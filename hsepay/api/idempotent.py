"""Run a POST's effect and its Idempotency-Key record in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from litestar import Request, Response
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay import idempotency
from hsepay.api.guard import caller_of
from hsepay.errors import InvalidRequest
from hsepay.idempotency import StoredResponse

__all__ = ["idempotency_key", "run_idempotent"]

Effect = Callable[[AsyncConnection], Awaitable[StoredResponse]]


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key, validated; two of them are a 400, not "the first one wins"."""
    keys = request.headers.getall("idempotency-key", [])
    if not keys:
        return None
    if len(keys) > 1:
        raise InvalidRequest("send one Idempotency-Key header, not several")
    return idempotency.validate_key(keys[0])


async def run_idempotent(
    request: Request, engine: AsyncEngine, table: Table, resource: str, request_body: object, effect: Effect
) -> Response:
    """Run `effect` once per Idempotency-Key and `resource`.

    `resource` is the canonical path (`/accounts/{str(uuid)}/deposit`), not the path as the client
    spelled it: one account written in upper case or without hyphens is still one scope.
    The caller's identity (token subject) is part of the scope when auth is on.
    """
    key = idempotency_key(request)
    caller = caller_of(request).subject
    async with engine.begin() as conn:
        if key is not None:
            # Keys are the caller's own (as Stripe's are per account): another caller's key of the
            # same spelling is another key, neither a replay nor a 409 that tells it was used.
            scope = f"{request.method} {resource}" if caller is None else f"{request.method} {resource} by {caller}"
            fingerprint = idempotency.request_fingerprint(scope, msgspec.json.encode(request_body))
            stored = await idempotency.claim(conn, table, scope=scope, key=key, request_hash=fingerprint)
            if stored is not None:
                return Response(
                    stored.body,
                    status_code=stored.status_code,
                    headers={**stored.headers, "Idempotent-Replayed": "true"},
                )
        response = await effect(conn)
        if key is not None:
            await idempotency.record(conn, table, scope=scope, key=key, response=response)
    return Response(response.body, status_code=response.status_code, headers=response.headers)
