"""The services hsepay runs, each declared once: its database, topics, event handlers, API and loops.

Plain data: a spec names a service's parts and how to make each from what it needs (an engine, the
settings); it builds nothing and knows no running system (`hsepay.bootstrap` builds the parts).
Everything that needs to know about a service (bootstrap, migrations, the CLI, `hsepay up`) reads
its spec here instead of branching on its name; an unknown name is a usage error, never a default.
A new service is one more entry in `SERVICES`.

Importing it costs next to nothing (`hsepay --help` reads the names and ports): each part's module,
tables included, is imported by the function that makes the part, when it is first needed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from hsepay.config import ConfigError, KafkaSettings, Settings

if TYPE_CHECKING:
    from litestar import Litestar
    from sqlalchemy import MetaData, Table
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

    from hsepay.orders.operations import Settled
    from hsepay.periodic import Periodic
    from hsepay.relay.inbound import HandlerMap

__all__ = ["SERVICES", "Database", "ServiceSpec", "UnknownService", "get", "named", "with_database"]


class UnknownService(ConfigError):
    """A service name that is not in the registry."""


@dataclass(frozen=True)
class Database:
    """A service's own database: the env var of its URL and the tables the generic machinery uses."""

    variable: str
    tables: Callable[[], ModuleType]
    """The service's `tables` module, which defines the generic tables under the names below."""

    @property
    def metadata(self) -> MetaData:
        return self.tables().metadata

    @property
    def outbox(self) -> Table:
        return self.tables().outbox

    @property
    def inbox(self) -> Table:
        return self.tables().inbox

    @property
    def idempotency_keys(self) -> Table:
        return self.tables().idempotency_keys


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    title: str
    default_port: int
    create_app: Callable[[AsyncEngine | None, Settings], Litestar]
    """The service's API from its engine (None: a service without a database) and the settings."""
    database: Database | None = None
    consumes: Callable[[KafkaSettings], tuple[str, ...]] = lambda kafka: ()
    produces: Callable[[KafkaSettings], tuple[str, ...]] = lambda kafka: ()
    handlers: Callable[[Settings], HandlerMap] | None = None
    jobs: Callable[[AsyncEngine, Settings], tuple[Periodic, ...]] = lambda engine, settings: ()
    """Background jobs beside the service's inbox consumer (the relay and the consumer bring their own purges)."""

    @property
    def has_workers(self) -> bool:
        return self.database is not None


# --- payments ------------------------------------------------------------------------------------


def _payments_tables() -> ModuleType:
    from hsepay.payments import tables

    return tables


def _payments_app(engine: AsyncEngine | None, settings: Settings) -> Litestar:
    from hsepay.api.app import create_payments_app

    assert engine is not None
    return create_payments_app(engine, api=settings.api, security=settings.security)


def _payments_handlers(settings: Settings) -> HandlerMap:
    from hsepay.payments.reactions import make_handlers

    return make_handlers(payment_status_topic=settings.kafka.payment_status_topic)


# --- orders --------------------------------------------------------------------------------------


def _orders_tables() -> ModuleType:
    from hsepay.orders import tables

    return tables


def _orders_app(engine: AsyncEngine | None, settings: Settings) -> Litestar:
    from hsepay.api.app import create_orders_app

    assert engine is not None
    return create_orders_app(
        engine, orders_topic=settings.kafka.orders_topic, api=settings.api, security=settings.security
    )


def _orders_handlers(settings: Settings) -> HandlerMap:
    from hsepay.orders.reactions import make_handlers

    return make_handlers(on_settled=_observe_settled_after_commit)


def _observe_settled_after_commit(conn: AsyncConnection, settled: Sequence[Settled]) -> None:
    """Feed the saga latency histogram with each order's creation-to-final time, once its transaction
    commits: a batch that rolls back (and is re-applied one message at a time) must not count its
    orders twice."""
    from sqlalchemy import event

    from hsepay.observability.metrics import observe_settled

    values = [(order.status, order.seconds) for order in settled]
    event.listen(conn.sync_connection, "commit", lambda _conn: observe_settled(values), once=True)


def _orders_jobs(engine: AsyncEngine, settings: Settings) -> tuple[Periodic, ...]:
    from hsepay.orders.redrive import Redrive
    from hsepay.periodic import Periodic, in_transaction

    saga = settings.saga
    redrive = Redrive(
        older_than=saga.redrive_after,
        topic=settings.kafka.orders_topic,
        batch=saga.redrive_batch,
        max_pause=saga.redrive_max_pause,
    ).step  # built once per process: it keeps its pacing between runs

    return (
        Periodic(
            "orders re-drive",
            settings.saga.redrive_interval,
            in_transaction(engine, redrive),
            "re-sent the payment request of %d order(s) still created",
            level=logging.WARNING,
            counter="hsepay_redrives_total",
        ),
    )


# --- gateway -------------------------------------------------------------------------------------


def _gateway_app(engine: AsyncEngine | None, settings: Settings) -> Litestar:
    from hsepay.api.app import api_documents
    from hsepay.gateway import create_gateway_app

    security = settings.security
    return create_gateway_app(settings.gateway, security=security, documents=api_documents(security))


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec(
            name="payments",
            title="Payments API: accounts, deposits, balances",
            default_port=8080,
            create_app=_payments_app,
            database=Database("HSEPAY_PAYMENTS_DB", _payments_tables),
            consumes=lambda kafka: (kafka.orders_topic,),
            produces=lambda kafka: (kafka.payment_status_topic,),
            handlers=_payments_handlers,
        ),
        ServiceSpec(
            name="orders",
            title="Orders API: orders and their payment status",
            default_port=8081,
            create_app=_orders_app,
            database=Database("HSEPAY_ORDERS_DB", _orders_tables),
            consumes=lambda kafka: (kafka.payment_status_topic,),
            produces=lambda kafka: (kafka.orders_topic,),
            handlers=_orders_handlers,
            jobs=_orders_jobs,
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


def named(
    choice: str, *, allowed: tuple[ServiceSpec, ...] | None = None, every: bool = True
) -> tuple[ServiceSpec, ...]:
    """`all` (when `every`) or one service name, among `allowed` (default: every service with a database).

    A refusal lists exactly the names this command takes, so that each one it offers works.
    """
    allowed = with_database() if allowed is None else allowed
    names = [spec.name for spec in allowed] + (["all"] if every else [])
    if choice == "all" and every:
        return allowed
    spec = SERVICES.get(choice)
    if spec is None or spec not in allowed:
        expected = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        if spec is None and choice != "all":
            raise UnknownService(f"unknown service {choice!r}; expected {expected}")
        raise UnknownService(f"{choice!r} is not one of {expected}")
    return (spec,)


def topics_of(spec: ServiceSpec, kafka: KafkaSettings) -> tuple[str, ...]:
    """Every topic a service touches (created before use)."""
    return tuple(dict.fromkeys((*spec.produces(kafka), *spec.consumes(kafka))))
