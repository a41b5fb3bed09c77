"""The one place that knows everything: resolves settings into URLs, engines, topics and handlers.

Everything else receives what it needs as arguments.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import psycopg
from sqlalchemy import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay import embedded, migrate
from hsepay.config import ConfigError, Settings, normalise_db_url
from hsepay.db import create_engine
from hsepay.migrate import SERVICES
from hsepay.relay.handlers import HandlerMap
from hsepay.relay.inbox_consumer import InboxConsumer
from hsepay.relay.kafka import BrokerConfig
from hsepay.relay.outbox_relay import OutboxRelay

__all__ = ["Runtime", "describe_db_error", "resolve_database_urls", "resolve_kafka"]

log = logging.getLogger(__name__)

DB_VARIABLES = {"payments": "HSEPAY_PAYMENTS_DB", "orders": "HSEPAY_ORDERS_DB"}


def resolve_database_urls(settings: Settings, services: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """The URL of each service database; starts the embedded server for those not configured."""
    urls = {service: settings.db.url_for(service) for service in services if settings.db.url_for(service)}
    missing = [service for service in services if service not in urls]
    if missing:
        try:
            server = embedded.ensure_postgres(settings.data_dir)
            created = embedded.ensure_databases(server, missing)
        except (embedded.EmbeddedError, psycopg.Error, OSError) as exc:
            raise ConfigError(
                f"{' and '.join(DB_VARIABLES[s] for s in missing)} unset and the embedded PostgreSQL "
                f"could not start under {settings.data_dir}: {exc}"
            ) from exc
        for service in missing:
            urls[service] = normalise_db_url(created[service], DB_VARIABLES[service])
    if settings.db.payments_url and settings.db.payments_url == settings.db.orders_url:
        raise ConfigError("HSEPAY_PAYMENTS_DB and HSEPAY_ORDERS_DB name the same database; each service needs its own")
    return urls


def resolve_kafka(settings: Settings) -> tuple[str, bool]:
    """Bootstrap servers and whether producer idempotence is on; starts the embedded broker if unset."""
    if settings.kafka.bootstrap_servers:
        idempotence = settings.kafka.idempotence if settings.kafka.idempotence is not None else True
        return settings.kafka.bootstrap_servers, idempotence
    try:
        bootstrap = embedded.ensure_broker(settings.data_dir)
    except (embedded.EmbeddedError, OSError) as exc:
        raise ConfigError(f"HSEPAY_KAFKA unset and the embedded broker could not start: {exc}") from exc
    # Tansu rejects InitProducerId, so idempotence stays off on it whatever the setting says.
    return bootstrap, False


def describe_db_error(service: str, url: str, exc: BaseException) -> str:
    """One line naming the variable and the server, for a database that cannot be reached."""
    parsed = make_url(url)
    where = parsed.host or parsed.query.get("host") or "local socket"
    if parsed.port:
        where = f"{where}:{parsed.port}"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"{DB_VARIABLES[service]}: cannot use database {parsed.database!r} at {where}: {reason}"


@dataclass
class Runtime:
    """Resolved settings and lazily built engines for one process."""

    settings: Settings
    db_urls: dict[str, str]
    engines: dict[str, AsyncEngine] = field(default_factory=dict)
    """Engines already built (tests pass theirs); the rest are built on first use."""

    @classmethod
    def from_settings(cls, settings: Settings, services: tuple[str, ...] = SERVICES) -> Runtime:
        return cls(settings=settings, db_urls=resolve_database_urls(settings, services))

    def engine(self, service: str) -> AsyncEngine:
        if service not in self.engines:
            self.engines[service] = create_engine(
                self.db_urls[service],
                pool_size=self.settings.db.pool_size,
                application_name=f"hsepay-{service}",
            )
        return self.engines[service]

    async def check_database(self, service: str) -> None:
        """Raise ConfigError with one readable line if the service database is unreachable."""
        try:
            async with self.engine(service).connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except (TimeoutError, DBAPIError, OSError) as exc:
            raise ConfigError(describe_db_error(service, self.db_urls[service], exc)) from None

    async def ready_engine(self, service: str) -> AsyncEngine:
        """The service engine, after checking that the database answers and has the current schema."""
        await self.check_database(service)
        await self.ensure_schema(service)
        return self.engine(service)

    def is_embedded(self, service: str) -> bool:
        return self.settings.db.url_for(service) is None

    async def ensure_schema(self, service: str) -> None:
        """Make sure the service database carries the current schema.

        The embedded database is migrated on first use (nobody else manages it); a configured one
        is left to `hsepay db upgrade`, since migrating production should be a deliberate step.
        """
        head = migrate.head_revision(service)
        async with self.engine(service).connect() as conn:
            revision = await conn.run_sync(migrate.revision_of)
        if revision == head:
            return
        if self.is_embedded(service):
            await asyncio.to_thread(migrate.upgrade, service, self.db_urls[service])
            return
        raise ConfigError(
            f"{DB_VARIABLES[service]}: schema is at revision {revision or 'none'}, expected {head}; "
            f"run `hsepay db upgrade {service}`"
        )

    async def dispose(self) -> None:
        for engine in self.engines.values():
            await engine.dispose()
        self.engines.clear()


# --- saga wiring: which tables, topics and handlers each service's workers use ----------------


def consumer_group(settings: Settings, service: str) -> str:
    return f"{settings.kafka.group_prefix}-{service}"


def broker_config(settings: Settings, bootstrap: str, idempotence: bool, service: str) -> BrokerConfig:
    return BrokerConfig(
        bootstrap_servers=bootstrap,
        idempotence=idempotence,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        client_id=f"hsepay-{service}",
    )


def all_topics(settings: Settings) -> tuple[str, ...]:
    return (settings.kafka.orders_topic, settings.kafka.payment_status_topic)


def service_tables(service: str) -> tuple[Table, Table]:
    """(outbox, inbox) of a service."""
    if service == "payments":
        from hsepay.payments.tables import inbox, outbox
    else:
        from hsepay.orders.tables import inbox, outbox
    return outbox, inbox


def service_handlers(service: str, settings: Settings) -> tuple[tuple[str, ...], HandlerMap]:
    """(topics consumed, handlers) of a service."""
    if service == "payments":
        from hsepay.payments.handlers import make_handlers

        return (settings.kafka.orders_topic,), make_handlers(payment_status_topic=settings.kafka.payment_status_topic)
    from hsepay.orders.handlers import make_handlers

    return (settings.kafka.payment_status_topic,), make_handlers()


def build_relay(rt: Runtime, service: str, broker: BrokerConfig) -> OutboxRelay:
    outbox, _ = service_tables(service)
    return OutboxRelay(
        name=service,
        engine=rt.engine(service),
        db_url=rt.db_urls[service],
        outbox=outbox,
        broker=broker,
        topics=all_topics(rt.settings),
        settings=rt.settings.relay,
    )


def build_consumer(rt: Runtime, service: str, broker: BrokerConfig) -> InboxConsumer:
    _, inbox = service_tables(service)
    topics, handlers = service_handlers(service, rt.settings)
    return InboxConsumer(
        name=service,
        engine=rt.engine(service),
        inbox=inbox,
        handlers=handlers,
        broker=broker,
        topics=topics,
        group_id=consumer_group(rt.settings, service),
        settings=rt.settings.consumer,
    )
