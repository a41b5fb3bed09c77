"""Litestar application factories; the engines and topics come from the caller (bootstrap)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay import __version__
from hsepay.api.health import HealthController
from hsepay.api.orders import OrderController
from hsepay.api.payments import AccountController
from hsepay.api.problems import (
    database_error_handler,
    problem_details_plugin,
    undecodable_body_handler,
    unexpected_error_handler,
)

__all__ = ["create_orders_app", "create_payments_app"]

MAX_BODY_BYTES = 64 * 1024


def _app(
    title: str,
    controllers: Sequence[type],
    dependencies: dict[str, Any],
    on_shutdown: Sequence[Callable[[], Any]] = (),
) -> Litestar:
    return Litestar(
        route_handlers=[*controllers, HealthController],
        dependencies={
            name: Provide(_constant(value), use_cache=True, sync_to_thread=False)
            for name, value in dependencies.items()
        },
        plugins=[problem_details_plugin()],
        exception_handlers={
            DBAPIError: database_error_handler,
            UnicodeDecodeError: undecodable_body_handler,
            Exception: unexpected_error_handler,
        },
        openapi_config=OpenAPIConfig(
            title=title, version=__version__, path="/schema", render_plugins=[SwaggerRenderPlugin(path="/swagger")]
        ),
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,  # the CLI configures logging once; Litestar must not replace it
        on_shutdown=list(on_shutdown),
    )


def _constant(value: Any) -> Callable[[], Any]:
    def provide() -> Any:
        return value

    return provide


def create_payments_app(engine: AsyncEngine, *, on_shutdown: Sequence[Callable[[], Any]] = ()) -> Litestar:
    return _app("hsepay payments", [AccountController], {"engine": engine}, on_shutdown)


def create_orders_app(
    engine: AsyncEngine, *, orders_topic: str = "orders", on_shutdown: Sequence[Callable[[], Any]] = ()
) -> Litestar:
    return _app("hsepay orders", [OrderController], {"engine": engine, "orders_topic": orders_topic}, on_shutdown)
