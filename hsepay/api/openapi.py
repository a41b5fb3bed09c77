"""What the OpenAPI document says beyond the handlers' signatures, so that it tells the truth.

- Errors are problem+json (RFC 9457) with the statuses each route can answer (`problems(...)`),
  replacing Litestar's default `application/json {status_code, detail, extra}` 400;
- the bearer scheme, and with auth on a security requirement on every guarded route;
- the headers that are part of the contract (`Documented` and its subclasses, each a route's
  `operation_class`): Idempotency-Key on every POST and Idempotent-Replayed on its replays,
  Location on 202, Link on a page, the RateLimit headers on answers and Retry-After on a 429,
  WWW-Authenticate on a 401;
- `Allow` on OPTIONS lists every method of a path (`fix_options_allow`).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Litestar, Response
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, OpenAPIHeader, OpenAPIResponse, Operation, Schema, SecurityScheme
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

__all__ = [
    "BEARER",
    "PROBLEM_JSON",
    "AcceptedWithLocation",
    "Documented",
    "Idempotent",
    "Paginated",
    "Problem",
    "bearer_components",
    "fix_options_allow",
    "problems",
]

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


BEARER_DOC = (
    "A JWT signed with HS256 by `hsepay token issue USER_ID [--operator]` (HSEPAY_AUTH_SECRET): `sub` is the "
    "user id, `role` is `user` (acts only for itself) or `operator` (acts for everyone, deposits), `iss` hsepay, "
    "`aud` hsepay-api, `exp` 1 minute to 366 days ahead. Send it as `Authorization: Bearer <token>`; a missing, "
    "expired or unverifiable token is a 401 whose WWW-Authenticate says why."
)


def bearer_components(auth_enabled: bool) -> Components:
    """The OpenAPI components: the bearer scheme, and whether this server asks for it. Only with auth on do
    the routes require it (`security`), so that the document never promises auth a server does not enforce."""
    state = "" if auth_enabled else " This server runs with authentication OFF (HSEPAY_AUTH_SECRET unset): no token."
    return Components(
        security_schemes={
            BEARER: SecurityScheme(type="http", scheme="bearer", bearer_format="JWT", description=BEARER_DOC + state)
        }
    )


def _header(description: str, schema: Schema | None = None) -> OpenAPIHeader:
    return OpenAPIHeader(description=description, schema=schema or Schema(type="string"))  # type: ignore[arg-type]


_INTEGER = Schema(type="integer")  # type: ignore[arg-type]
RATE_LIMIT = {
    "RateLimit-Policy": _header("the caller's policy, e.g. `200;w=2`: a burst of 200 per 2 s window"),
    "RateLimit-Limit": _header("requests the caller may send at once", _INTEGER),
    "RateLimit-Remaining": _header("requests left before a 429", _INTEGER),
    "RateLimit-Reset": _header("seconds until the allowance is whole again", _INTEGER),
}
"""On every answer of a guarded route while HSEPAY_RATE_LIMIT > 0 (IETF RateLimit header fields draft)."""
RETRY_AFTER = {"Retry-After": _header("seconds to wait before retrying", _INTEGER)}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": _header(
        '`Bearer realm="hsepay"`, with `error="invalid_token"` when a token came and was refused (the detail says why)'
    )
}
IDEMPOTENCY_KEY = OpenAPIParameter(
    name="Idempotency-Key",
    param_in="header",  # type: ignore[arg-type]
    required=False,
    description=(
        "Any 1..255 printable characters without commas, chosen by the client. The same key with the same body "
        "answers the stored response (with Idempotent-Replayed: true) and has no second effect; the same key with "
        "another body is a 409. Keys are kept HSEPAY_IDEMPOTENCY_TTL seconds (24 h)."
    ),
    # printable ASCII without commas, no space at either end (a proxy may trim it): what the API accepts
    schema=Schema(
        type="string",  # type: ignore[arg-type]
        min_length=1,
        max_length=255,
        pattern=r"^[!-+\--~]([ -+\--~]*[!-+\--~])?$",
    ),
)
REPLAYED = {"Idempotent-Replayed": _header("`true` when this is the stored answer to a repeated Idempotency-Key")}


@dataclass
class Documented(Operation):
    """An operation with the headers every guarded route answers with (RateLimit, Retry-After on 429,
    WWW-Authenticate on 401). Litestar builds each route's Operation with its `operation_class`; a
    dataclass again, so that the generated __init__ calls __post_init__ (Operation's does not)."""

    def __post_init__(self) -> None:
        for status, response in (self.responses or {}).items():
            if not isinstance(response, OpenAPIResponse):
                continue
            headers = dict(response.headers or {})
            if status.startswith("2"):
                headers |= RATE_LIMIT | self.success_headers()
            elif status == "429":
                headers |= RATE_LIMIT | RETRY_AFTER
            elif status == "401":
                headers |= WWW_AUTHENTICATE
            response.headers = headers or None  # type: ignore[assignment]

    def success_headers(self) -> dict[str, OpenAPIHeader]:
        return {}


class Idempotent(Documented):
    """A POST: takes an Idempotency-Key, and says when its answer is a replay."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]

    def success_headers(self) -> dict[str, OpenAPIHeader]:
        return dict(REPLAYED)


class AcceptedWithLocation(Idempotent):
    """POST /orders: a 202 whose Location names the new order."""

    def success_headers(self) -> dict[str, OpenAPIHeader]:
        return {
            **REPLAYED,
            "Location": _header(
                "the new order, to poll for its final status: `/orders/{id}` (gateway: `/api/orders/{id}`)"
            ),
        }


class Paginated(Documented):
    """A list: Link rel=next names the following page while there is one."""

    def success_headers(self) -> dict[str, OpenAPIHeader]:
        return {"Link": _header('`</orders?…&cursor=…>; rel="next"` (gateway: `</api/orders?…>`): the next page')}


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
