"""The services hsepay runs, each declared once: its database, topics, event handlers, API and loops.

Everything that needs to know about a service (bootstrap, migrations, the CLI, `hsepay up`) reads
its spec here instead of branching on its name; an unknown name is a usage error, never a default.
A new service is one more entry in `SERVICES`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.config import ConfigError, KafkaSettings, Settings
from hsepay.orders import tables as orders_tables
from hsepay.payments import tables as payments_tables
from hsepay.relay.inbound import HandlerMap

if TYPE_CHECKING:
    from litestar import Litestar

    from hsepay.bootstrap import Runtime

__all__ = ["SERVICES", "Database", "Periodic", "ServiceSpec", "UnknownService", "get", "named", "with_database"]


class UnknownService(ConfigError):
    """A service name that is not in the registry."""


@dataclass(frozen=True)
class Database:
    """A service's own database: the env var of its URL and the tables the generic machinery uses."""

    variable: str
    metadata: MetaData
    outbox: Table
    inbox: Table
    idempotency_keys: Table

    @classmethod
    def of(cls, tables: ModuleType, *, variable: str) -> Database:
        """From a service's `tables` module, which defines the generic tables under these names."""
        return cls(variable, tables.metadata, tables.outbox, tables.inbox, tables.idempotency_keys)


@dataclass(frozen=True)
class Periodic:
    """A background step run in its own transaction on the service database every `interval`."""

    name: str
    interval: Callable[[Settings], float]
    step: Callable[[AsyncConnection, Settings], Awaitable[int]]
    report: str
    """Logged (with the step's count) when the step did something."""
    counter: str | None = None
    """The Prometheus counter (in hsepay.observability.catalog) that adds up the step's counts."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    title: str
    default_port: int
    create_app: Callable[[Runtime], Litestar]
    database: Database | None = None
    consumes: Callable[[KafkaSettings], tuple[str, ...]] = lambda kafka: ()
    produces: Callable[[KafkaSettings], tuple[str, ...]] = lambda kafka: ()
    handlers: Callable[[Settings], HandlerMap] | None = None
    background: tuple[Periodic, ...] = ()

    @property
    def has_workers(self) -> bool:
        return self.database is not None


# --- payments ------------------------------------------------------------------------------------


def _payments_app(rt: Runtime) -> Litestar:
    from hsepay.api.app import create_payments_app

    return create_payments_app(rt.engine("payments"), api=rt.settings.api, security=rt.settings.security)


def _payments_handlers(settings: Settings) -> HandlerMap:
    from hsepay.payments.reactions import make_handlers

    return make_handlers(payment_status_topic=settings.kafka.payment_status_topic)


# --- orders --------------------------------------------------------------------------------------


def _orders_app(rt: Runtime) -> Litestar:
    from hsepay.api.app import create_orders_app

    return create_orders_app(
        rt.engine("orders"),
        orders_topic=rt.settings.kafka.orders_topic,
        api=rt.settings.api,
        security=rt.settings.security,
    )


def _orders_handlers(settings: Settings) -> HandlerMap:
    from hsepay.observability.saga import observe_settled_after_commit
    from hsepay.orders.reactions import make_handlers

    return make_handlers(on_settled=observe_settled_after_commit)


async def _redrive(conn: AsyncConnection, settings: Settings) -> int:
    from hsepay.orders.operations import redrive_stale_orders

    return await redrive_stale_orders(conn, older_than=settings.saga.redrive_after, topic=settings.kafka.orders_topic)


# --- gateway -------------------------------------------------------------------------------------


def _gateway_app(rt: Runtime) -> Litestar:
    from hsepay.gateway import create_gateway_app

    return create_gateway_app(rt.settings.gateway)


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            name="payments",
            title="Payments API: accounts, deposits, balances",
            default_port=8080,
            create_app=_payments_app,
            database=Database.of(payments_tables, variable="HSEPAY_PAYMENTS_DB"),
            consumes=lambda kafka: (kafka.orders_topic,),
            produces=lambda kafka: (kafka.payment_status_topic,),
            handlers=_payments_handlers,
        ),
        ServiceSpec(
            name="orders",
            title="Orders API: orders and their payment status",
            default_port=8081,
            create_app=_orders_app,
            database=Database.of(orders_tables, variable="HSEPAY_ORDERS_DB"),
            consumes=lambda kafka: (kafka.payment_status_topic,),
            produces=lambda kafka: (kafka.orders_topic,),
            handlers=_orders_handlers,
            background=(
                Periodic(
                    name="re-drive",
                    interval=lambda settings: settings.saga.redrive_interval,
                    step=_redrive,
                    report="re-sent the payment request of %d order(s) still created",
                    counter="hsepay_redrives_total",
                ),
            ),
        ),
        ServiceSpec(
            name="gateway",
            title="Gateway: the original system's /api paths and /api/summary, in front of both APIs",
            default_port=3000,
            create_app=_gateway_app,
        ),
    )
}


def get(name: str) -> ServiceSpec:
    try:
        return SERVICES[name]
    except KeyError:
        raise UnknownService(f"unknown service {name!r}; expected one of: {', '.join(SERVICES)}") from None


def with_database() -> tuple[ServiceSpec, ...]:
    """The services that own a database (and so an outbox, an inbox and workers)."""
    return tuple(spec for spec in SERVICES.values() if spec.database is not None)


def named(choice: str, *, allowed: tuple[ServiceSpec, ...] | None = None) -> tuple[ServiceSpec, ...]:
    """`all` or one service name, among `allowed` (default: every service with a database)."""
    allowed = with_database() if allowed is None else allowed
    if choice == "all":
        return allowed
    spec = get(choice)
    if spec not in allowed:
        raise UnknownService(f"{choice!r} is not one of: {', '.join(s.name for s in allowed)} or all")
    return (spec,)


def topics_of(spec: ServiceSpec, kafka: KafkaSettings) -> tuple[str, ...]:
    """Every topic a service touches (created before use)."""
    return tuple(dict.fromkeys((*spec.produces(kafka), *spec.consumes(kafka))))
