"""The gateway app: the seed gateway's paths (HSEPaymentSystem gateway/main.go), forwarded unchanged.

| gateway                              | upstream                                   |
| ------------------------------------ | ------------------------------------------ |
| POST /api/accounts                   | payments POST /accounts                    |
| POST /api/accounts/{id}/deposit      | payments POST /accounts/{id}/deposit       |
| GET  /api/accounts/balance?user_id=  | payments GET /accounts/balance             |
| POST /api/orders                     | orders POST /orders                        |
| GET  /api/orders?...                 | orders GET /orders (Link rewritten)        |
| GET  /api/order/{id}, /api/orders/{id} | orders GET /order/{id}                   |
| GET  /api/summary?user_id=           | both, in parallel: one JSON object         |

Unlike the seed, the summary is real JSON (the seed wrapped both answers in `{"raw": "..."}`
strings and listed every user's orders), a request id is added where missing, the upstreams'
answers keep their status and the headers that describe them, and an upstream that is down or slow
is a 503 or 504 problem+json after a bounded wait (the seed waited 10 s, then answered 503 with a
Go error string).

A careful proxy (issue 18): the client's address goes upstream in X-Forwarded-For (the APIs
believe it from HSEPAY_TRUSTED_PROXIES only); a request, body included, runs under
HSEPAY_REQUEST_TIMEOUT like the APIs' (408 while its body is still arriving); only the headers that
describe an answer come back (no hop-by-hop header, cookie or upstream internals); every copy of a
forwarded request header goes upstream, so two Idempotency-Keys are refused as the APIs refuse them.

(Over 300 lines: the route table above and the handlers it names, kept together so that the table
is the truth; forwarding is in `upstream.py`, the document in `openapi.py`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Annotated
from urllib.parse import quote, urlencode

import httpx
import msgspec
from litestar import Controller, Litestar, Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import OpenAPI
from litestar.params import FromPath, QueryParameter

from hsepay import __version__
from hsepay.api.guard import Guard
from hsepay.api.openapi import (
    PROBLEM_JSON,
    AcceptedWithLocation,
    Documented,
    Idempotent,
    Paginated,
    Problem,
    bearer_components,
    fix_options_allow,
    problems,
)
from hsepay.api.openapi30 import Json30RenderPlugin, OfflineSwagger30
from hsepay.api.problems import problem_details_plugin, unexpected_error_handler
from hsepay.api.schemas import AccountCreated, Balance, BalanceRefilled, OrderAccepted, OrderView
from hsepay.config import GatewaySettings, SecuritySettings
from hsepay.gateway.openapi import UPSTREAM_FAILURES, document_forwarded_routes
from hsepay.gateway.upstream import Upstream, UpstreamFailed, forward, outgoing_headers, problem, returned
from hsepay.observability.endpoints import (
    HealthController,
    MetricsController,
    http_observer,
    request_id_on_every_answer,
)
from hsepay.observability.sources import Readiness, watching
from hsepay.orders.model import CURSOR_PATTERN

__all__ = ["Summary", "create_gateway_app"]

MAX_BODY_BYTES = 64 * 1024
SUMMARY_ORDERS = 100

_FAILURES = {
    status: ResponseSpec(None, description=UPSTREAM_FAILURES[str(status)], media_type="application/problem+json")
    for status in (503, 504)
}


class Summary(msgspec.Struct):
    user_id: uuid.UUID
    balance: int | None
    """None: the user has no account."""
    orders: list[OrderView]
    """The user's newest orders, newest first (at most `limit`)."""
    next: str | None = None
    """The gateway path of the next page of orders, if there are more."""


def _segment(raw: str) -> str:
    """A path parameter as one URL segment: nothing in it can climb out of its place (`..`, `/`)."""
    return quote(raw, safe="").replace(".", "%2E")


def _upstreams(request: Request) -> Mapping[str, Upstream]:
    return request.app.state.upstreams


class GatewayController(Controller):
    path = "/api"
    tags = ["gateway"]

    @post(
        "/accounts",
        summary="Open an account (payments POST /accounts)",
        status_code=201,
        responses=_FAILURES,
        operation_class=Idempotent,
    )
    async def create_account(self, request: Request) -> Response[AccountCreated]:
        return await forward(request, _upstreams(request)["payments"], "/accounts")

    @post(
        "/accounts/{user_id:str}/deposit",
        summary="Deposit (payments POST /accounts/{id}/deposit)",
        status_code=200,
        responses=_FAILURES,
        operation_class=Idempotent,
    )
    async def deposit(self, request: Request, user_id: FromPath[str]) -> Response[BalanceRefilled]:
        return await forward(request, _upstreams(request)["payments"], f"/accounts/{_segment(user_id)}/deposit")

    @get(
        "/accounts/balance",
        summary="Balance (payments GET /accounts/balance?user_id=)",
        responses=_FAILURES,
        operation_class=Documented,
    )
    async def balance(self, request: Request) -> Response[Balance]:
        return await forward(request, _upstreams(request)["payments"], "/accounts/balance")

    @post(
        "/orders",
        summary="Place an order (orders POST /orders)",
        status_code=202,
        responses=_FAILURES,
        operation_class=AcceptedWithLocation,
    )
    async def create_order(self, request: Request) -> Response[OrderAccepted]:
        return await forward(request, _upstreams(request)["orders"], "/orders")

    @get(
        "/orders",
        summary="List orders (orders GET /orders; Link rewritten to /api)",
        responses=_FAILURES,
        operation_class=Paginated,
    )
    async def list_orders(self, request: Request) -> Response[list[OrderView]]:
        return await forward(request, _upstreams(request)["orders"], "/orders")

    @get(
        ["/order/{order_id:str}", "/orders/{order_id:str}"],
        summary="One order (orders GET /order/{id})",
        operation_class=Documented,
    )
    async def get_order(self, request: Request, order_id: FromPath[str]) -> Response[OrderView]:
        return await forward(request, _upstreams(request)["orders"], f"/order/{_segment(order_id)}")

    @get(
        "/summary",
        summary="A user's balance and newest orders in one JSON object",
        responses={
            **problems(403, 502, 504),
            400: ResponseSpec(
                data_container=Problem,
                media_type=PROBLEM_JSON,
                description="user_id missing or not a UUID, limit out of range, or a cursor no API returned",
                generate_examples=False,
            ),
        },
    )
    async def summary(
        self,
        request: Request,
        user_id: Annotated[uuid.UUID, QueryParameter(description="the user")],
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="orders to include")] = SUMMARY_ORDERS,
        cursor: Annotated[
            str | None, QueryParameter(pattern=CURSOR_PATTERN, description="from `next`: the following page")
        ] = None,
    ) -> Response[Summary]:
        user = user_id
        upstreams, headers = _upstreams(request), outgoing_headers(request)
        page = urlencode({"user_id": str(user), "limit": limit, **({"cursor": cursor} if cursor else {})})
        try:
            balance, orders = await asyncio.gather(
                upstreams["payments"].call("GET", f"/accounts/balance?user_id={user}", headers),
                upstreams["orders"].call("GET", f"/orders?{page}", headers),
            )
        except UpstreamFailed as failed:
            return failed.response()
        for answer in (balance, orders):
            if answer is balance and answer.status_code == 404:
                continue  # no account: a balance of None
            if 400 <= answer.status_code < 500 or answer.status_code == 503:
                # The caller's own problem (or an API saying it is down): its answer, with its headers
                # (WWW-Authenticate, Retry-After and the RateLimit headers on a 429).
                return returned(answer)
        if balance.status_code not in (200, 404) or orders.status_code != 200:
            return problem(
                502,
                "Bad gateway",
                f"unexpected answers: payments {balance.status_code}, orders {orders.status_code}",
            )
        link = orders.headers.get("link")
        next_page = None
        if link and link.startswith("</"):
            upstream_next = link[1 : link.index(">")]
            next_page = "/api/summary?" + upstream_next.partition("?")[2]
        return Response(
            Summary(
                user_id=user,
                balance=balance.json()["balance"] if balance.status_code == 200 else None,
                orders=orders.json(),
                next=next_page,
            )
        )


class UpstreamsSource:
    """The gateway is ready when both APIs answer their liveness probe."""

    key = ("upstreams",)

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self.upstreams = upstreams

    async def refresh(self) -> None:
        return None

    def samples(self):
        return iter(())

    async def ready(self) -> Readiness:
        async def live(upstream: Upstream) -> str:
            try:
                response = await upstream.client.get("/health/live", timeout=1.0)
            except httpx.HTTPError as exc:
                return type(exc).__name__
            return "ok" if response.status_code == 200 else f"HTTP {response.status_code}"

        names = list(self.upstreams)
        answers = await asyncio.gather(*(live(self.upstreams[name]) for name in names))
        detail = dict(zip(names, answers, strict=True))
        return Readiness(all(answer == "ok" for answer in answers), detail)


def create_gateway_app(
    settings: GatewaySettings | None = None,
    *,
    security: SecuritySettings | None = None,
    documents: Mapping[str, OpenAPI] | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> Litestar:
    """The gateway.

    `security`: the deadline of each request (HSEPAY_REQUEST_TIMEOUT) and whether the APIs behind it
    want tokens (documented, never checked here: the APIs verify them). `documents`: the APIs'
    OpenAPI documents, whose operations describe the forwarded routes. `transports` (tests) replace
    the network for some upstreams.
    """
    settings = settings or GatewaySettings()
    security = security or SecuritySettings()
    transports = transports or {}
    # The guard's deadline only: no token check (the APIs do it) and no rate limit (the APIs count
    # each client by the X-Forwarded-For the gateway sends).
    deadline = Guard(SecuritySettings(rate_limit=0, request_timeout=security.request_timeout))
    urls = {"payments": settings.payments_url, "orders": settings.orders_url}

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        upstreams = {
            name: Upstream.connect(name, url, settings.timeout, transports.get(name)) for name, url in urls.items()
        }
        app.state.upstreams = upstreams
        try:
            with watching([UpstreamsSource(upstreams)]):
                yield
        finally:
            for upstream in upstreams.values():
                await upstream.client.aclose()

    app = Litestar(
        route_handlers=[
            Router(path="/", route_handlers=[GatewayController], middleware=[deadline.middleware]),
            HealthController,
            MetricsController,
        ],
        lifespan=[lifespan],
        state=State({"upstreams": {}}),
        middleware=[http_observer("gateway")],
        before_send=[request_id_on_every_answer],
        plugins=[problem_details_plugin()],
        exception_handlers={Exception: unexpected_error_handler},
        openapi_config=OpenAPIConfig(
            title="hsepay gateway",
            version=__version__,
            description="The original system's /api paths in front of the payments and orders APIs.",
            path="/schema",
            render_plugins=[OfflineSwagger30("/swagger"), Json30RenderPlugin()],  # no CDN: works offline
            components=bearer_components(security.auth_enabled),
        ),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,
    )
    fix_options_allow(app)
    if documents:
        document_forwarded_routes(app.openapi_schema, documents, auth=security.auth_enabled)
    return app
