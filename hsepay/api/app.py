"""Litestar application factories; the engines and topics come from the caller (bootstrap)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from types import ModuleType
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import OpenAPI
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hsepay import __version__, idempotency
from hsepay.api.bodies import ClosedStructSchemaPlugin
from hsepay.api.guard import Guard
from hsepay.api.lane import Lane, LanedLitestar, raise_caught
from hsepay.api.openapi import BEARER, bearer_components, fix_options_allow
from hsepay.api.openapi30 import Json30RenderPlugin, OfflineSwagger30
from hsepay.api.orders import OrderController, lane_request, order_accepted
from hsepay.api.payments import AccountController
from hsepay.api.problems import (
    database_error_handler,
    problem_details_plugin,
    undecodable_body_handler,
    unexpected_error_handler,
)
from hsepay.batching import GroupCommit
from hsepay.bounded_db import BoundedDatabase
from hsepay.config import ApiSettings, SecuritySettings
from hsepay.group_read import GroupRead
from hsepay.observability.endpoints import (
    HealthController,
    MetricsController,
    http_observer,
    request_id_on_every_answer,
)
from hsepay.observability.probes import DatabaseSource
from hsepay.observability.sources import watching
from hsepay.orders import operations as orders_operations
from hsepay.orders import tables as orders_tables
from hsepay.orders.intake import accept_orders, none_keyed, one_claim_per_key
from hsepay.payments import tables as payments_tables
from hsepay.periodic import Periodic, in_transaction, run_periodic

__all__ = ["api_documents", "create_orders_app", "create_payments_app"]

MAX_BODY_BYTES = 64 * 1024

log = logging.getLogger(__name__)
DEFAULT_API_SETTINGS = ApiSettings()  # frozen, so one shared default is safe
DEFAULT_SECURITY = SecuritySettings()  # auth off, as with HSEPAY_AUTH_SECRET unset


def _bounded(engine: AsyncEngine, api: ApiSettings) -> BoundedDatabase:
    return BoundedDatabase(engine, timeout=api.db_timeout, silence=api.db_silence)


def _lifespan(
    engine: AsyncEngine,
    tables: ModuleType,
    settings: ApiSettings,
    service: str,
    closing: Sequence[GroupCommit | GroupRead] = (),
    db: BoundedDatabase | None = None,
):
    """Lifespan: forget expired Idempotency-Keys every `purge_interval` while the app runs, report the
    service database to /metrics and /health/ready, and at the end let the group commit and group
    read finish what they have in flight."""

    async def purge(conn: AsyncConnection) -> int:
        return await idempotency.purge_expired(conn, tables.idempotency_keys, older_than=settings.idempotency_ttl)

    job = Periodic(
        f"{service} idempotency key purge",
        settings.purge_interval,
        in_transaction(engine, purge),
        f"forgot %d keys older than {settings.idempotency_ttl:g}s",
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        stop = asyncio.Event()
        # An API depends on its database only: it takes orders while the broker is down (the outbox keeps them).
        with watching([DatabaseSource(service, engine, tables.outbox, tables.inbox)]):
            task = asyncio.create_task(run_periodic(job, stop))
            try:
                yield
            finally:
                stop.set()
                await task
                for batcher in closing:
                    await batcher.close()
                if db is not None:
                    await db.close()

    return lifespan


def _app(
    title: str,
    controllers: Sequence[type],
    dependencies: dict[str, Any],
    lifespan: Callable[[Litestar], Any],
    security: SecuritySettings,
    service: str,
    announce: bool = True,
    guard: Guard | None = None,
    app_class: type[Litestar] = Litestar,
) -> Litestar:
    if announce and not security.auth_enabled:
        log.warning(
            "%s: AUTHENTICATION IS OFF (HSEPAY_AUTH_SECRET unset): every caller may act on every account", title
        )
    guard = guard or Guard(security)
    guarded = Router(
        path="/",
        route_handlers=list(controllers),
        middleware=[guard.middleware, *([raise_caught] if app_class is LanedLitestar else [])],
        security=[{BEARER: []}] if security.auth_enabled else None,
    )
    app = app_class(
        lifespan=[lifespan],
        route_handlers=[guarded, HealthController, MetricsController],
        middleware=[http_observer(service)],
        before_send=[request_id_on_every_answer],
        dependencies={
            name: Provide(_constant(value), use_cache=True, sync_to_thread=False)
            for name, value in {**dependencies, "self_deposit": security.self_deposit}.items()
        },
        plugins=[problem_details_plugin(), ClosedStructSchemaPlugin()],
        exception_handlers={
            DBAPIError: database_error_handler,
            UnicodeDecodeError: undecodable_body_handler,
            Exception: unexpected_error_handler,
        },
        cors_config=(
            CORSConfig(
                allow_origins=list(security.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                expose_headers=["Location", "Link", "Idempotent-Replayed", "Retry-After", "RateLimit-Remaining"],
            )
            if security.cors_origins
            else None
        ),
        openapi_config=OpenAPIConfig(
            title=title,
            version=__version__,
            path="/schema",
            render_plugins=[OfflineSwagger30("/swagger"), Json30RenderPlugin()],  # no CDN: works offline
            components=bearer_components(security.auth_enabled),
        ),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the CLI configures logging once; Litestar must not replace it
    )
    fix_options_allow(app)
    return app


def _constant(value: Any) -> Callable[[], Any]:
    def provide() -> Any:
        return value

    return provide


def create_payments_app(
    engine: AsyncEngine,
    *,
    api: ApiSettings = DEFAULT_API_SETTINGS,
    security: SecuritySettings = DEFAULT_SECURITY,
    announce: bool = True,
) -> Litestar:
    """`announce`: log that auth is off (False: an app built only for its OpenAPI document)."""
    db = _bounded(engine, api)
    lifespan = _lifespan(engine, payments_tables, api, "payments", db=db)
    return _app("hsepay payments", [AccountController], {"db": db}, lifespan, security, "payments", announce)


def create_orders_app(
    engine: AsyncEngine,
    *,
    orders_topic: str = "orders",
    api: ApiSettings = DEFAULT_API_SETTINGS,
    security: SecuritySettings = DEFAULT_SECURITY,
    announce: bool = True,
    fast_lane: bool = True,
) -> Litestar:
    """The orders API. `fast_lane=False` sends every request through its Litestar handler: the
    reference the lane (hsepay.api.lane) is tested against."""
    db = _bounded(engine, api)
    intake = GroupCommit(
        db,
        functools.partial(
            accept_orders, topic=orders_topic, keys=orders_tables.idempotency_keys, respond=order_accepted
        ),
        separate=one_claim_per_key,
        single_statement=none_keyed,
        timeout=api.db_timeout,
        max_queue=api.queue,
    )
    reader = GroupRead(engine, orders_operations.find_orders)
    lifespan = _lifespan(engine, orders_tables, api, "orders", closing=(intake, reader), db=db)
    dependencies = {"db": db, "orders_topic": orders_topic, "intake": intake, "reader": reader}
    guard = Guard(security)
    app = _app(
        "hsepay orders",
        [OrderController],
        dependencies,
        lifespan,
        security,
        "orders",
        announce,
        guard,
        LanedLitestar if fast_lane else Litestar,
    )
    if isinstance(app, LanedLitestar):
        app.take_lane(
            Lane(
                guard=guard,
                observer=http_observer("orders"),
                read=lambda key: db.wait_for(reader.get(key)),
                prepare=lane_request,
                submit=intake.submit,
                max_body=MAX_BODY_BYTES,
                cors=bool(security.cors_origins),
            )
        )
    return app


def api_documents(security: SecuritySettings) -> dict[str, OpenAPI]:
    """Both APIs' OpenAPI documents as served with these settings, built without a database (the
    engine is never connected): what the gateway's document says about the routes it forwards."""
    unused = create_async_engine("postgresql+psycopg://unused/unused")
    return {
        "payments": create_payments_app(unused, security=security, announce=False).openapi_schema,
        "orders": create_orders_app(unused, security=security, announce=False).openapi_schema,
    }
