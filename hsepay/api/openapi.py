"""What the OpenAPI document says beyond the handlers' signatures, so that it tells the truth.

- Errors are problem+json (RFC 9457) with the statuses each route can answer (`problems(...)`),
  replacing Litestar's default `application/json {status_code, detail, extra}` 400;
- with auth on, the bearer scheme and a security requirement on every guarded route;
- `Allow` on OPTIONS lists every method of a path (`fix_options_allow`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Litestar, Response
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

__all__ = ["PROBLEM_JSON", "Problem", "bearer_components", "fix_options_allow", "problems", "BEARER"]

PROBLEM_JSON = "application/problem+json"
BEARER = "bearer"

_WHY = {
    400: "Malformed input: body, id, query parameter or Idempotency-Key",
    401: "No bearer token, or one that does not verify (see WWW-Authenticate)",
    403: "The token may not do this (a user acting for another user, or an operator-only action)",
    404: "No such resource, or one the caller may not see",
    408: "The request body did not arrive within the request timeout",
    409: "Conflicts with the current state, or an Idempotency-Key reused with another request",
    413: "The body is larger than 64 KiB",
    415: "The body is not JSON (Content-Type must be application/json)",
    429: "Too many requests from this caller (see Retry-After and the RateLimit headers)",
    503: "The database is unavailable, or the request ran past the request timeout; retry later",
}


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem: a stable `title` and a `detail` for this occurrence."""

    status: int
    title: str
    detail: str | None = None
    type: str | None = None
    errors: list[dict[str, Any]] | None = None


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """The route's error responses, each documented as problem+json; 401, 408, 429 and 503 apply to
    every guarded route and are always included."""
    every = {401, 408, 429, 503}
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_JSON,
            description=_WHY.get(status, HTTPStatus(status).phrase),
            generate_examples=False,
        )
        for status in sorted({*statuses, *every})
    }


def bearer_components(auth_enabled: bool) -> Components:
    """The OpenAPI components: with auth on, the bearer scheme (auth off: none is claimed)."""
    if not auth_enabled:
        return Components()
    return Components(
        security_schemes={
            BEARER: SecurityScheme(
                type="http",
                scheme="bearer",
                bearer_format="JWT",
                description="HS256 token from `hsepay token issue`; sub = user id, role = user | operator",
            )
        }
    )


def fix_options_allow(app: Litestar) -> None:
    """Point every automatic OPTIONS handler at its final route.

    Litestar registers a controller's handlers one by one and rebuilds a path's route each time, but
    keeps the OPTIONS handler made for the first one, whose `Allow` then lists only that handler's
    methods (`OPTIONS /orders` said `OPTIONS, POST`, leaving out GET).
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or "OPTIONS" not in route.route_handler_map:
            continue
        handler, _ = route.route_handler_map["OPTIONS"]
        if handler.handler_name != "options_handler":
            continue
        allow = ", ".join(sorted(route.methods))

        def options_handler(scope: Any, allow: str = allow) -> Response:
            return Response(
                content=None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": allow}, media_type=MediaType.TEXT
            )

        handler._fn = options_handler
