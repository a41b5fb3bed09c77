"""Run a POST's effect and its Idempotency-Key record in one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from litestar import Request, Response
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay import idempotency
from hsepay.idempotency import StoredResponse

__all__ = ["run_idempotent"]

Effect = Callable[[AsyncConnection], Awaitable[StoredResponse]]


async def run_idempotent(
    request: Request, engine: AsyncEngine, table: Table, request_body: object, effect: Effect
) -> Response:
    key = request.headers.get("idempotency-key")
    async with engine.begin() as conn:
        if key is not None:
            key = idempotency.validate_key(key)
            scope = f"{request.method} {request.url.path}"
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
