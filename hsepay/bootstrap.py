"""The one place that builds things: settings become database URLs, engines, the broker, relays and consumers.

Everything else receives what it needs as arguments. Functions named `ensure_*` may start an
embedded engine; nothing else here starts anything. (A little over 300 lines: it is the one
wiring point, and splitting it would scatter what it is there to keep together.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay import embedded, migrate, registry
from hsepay.config import ConfigError, Settings, normalise_db_url
from hsepay.db import create_engine
from hsepay.registry import ServiceSpec
from hsepay.relay.broker import BrokerConfig
from hsepay.relay.consumer import InboxConsumer
from hsepay.relay.outbox import OutboxRelay
from hsepay.relay.probe import BrokerInfo, BrokerProbeError, BrokerRefusedLogin, choose_idempotence, probe_broker
from hsepay.relay.probe import describe as describe_broker
from hsepay.resilience import Backoff, describe, is_unavailable

__all__ = [
    "BrokerEndpoint",
    "DatabaseUnavailable",
    "Runtime",
    "connect_broker",
    "describe_db_error",
    "ensure_database_urls",
    "locate_broker",
]

log = logging.getLogger(__name__)


class DatabaseUnavailable(ConfigError):
    """The database does not answer (down, restarting, unreachable); the message names the variable."""


def _database(spec: ServiceSpec) -> registry.Database:
    if spec.database is None:
        raise ConfigError(f"the {spec.name} service has no database")
    return spec.database


def ensure_database_urls(settings: Settings, specs: Sequence[ServiceSpec]) -> dict[str, str]:
    """The URL of each service database; starts the embedded server for those not configured."""
    _check_distinct_urls(settings)
    urls: dict[str, str] = {}
    missing: list[ServiceSpec] = []
    for spec in specs:
        url = settings.db.url_of(_database(spec).variable)
        if url:
            urls[spec.name] = url
        else:
            missing.append(spec)
    if missing:
        try:
            server = embedded.ensure_postgres(settings.data_dir)
            created = embedded.ensure_databases(server, [spec.name for spec in missing])
        except (embedded.EmbeddedError, psycopg.Error, OSError) as exc:
            raise ConfigError(
                f"{' and '.join(_database(s).variable for s in missing)} unset and the embedded PostgreSQL "
                f"could not start under {settings.data_dir}: {exc}"
            ) from exc
        for spec in missing:
            urls[spec.name] = normalise_db_url(created[spec.name], _database(spec).variable)
    return urls


def _check_distinct_urls(settings: Settings) -> None:
    """Every configured service database must be its own (whichever services this command uses)."""
    seen: dict[str, str] = {}
    for spec in registry.with_database():
        variable = _database(spec).variable
        url = settings.db.url_of(variable)
        if url and url in seen:
            raise ConfigError(f"{seen[url]} and {variable} name the same database; each service needs its own")
        if url:
            seen[url] = variable


@dataclass(frozen=True)
class BrokerEndpoint:
    bootstrap_servers: str
    idempotence: bool
    embedded: bool
    info: BrokerInfo | None = None
    """What the start-up probe found (None where a test or a status command skipped it)."""


def locate_broker(settings: Settings) -> tuple[str, bool]:
    """(bootstrap servers, embedded?): HSEPAY_KAFKA, or the embedded broker, started if need be."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers, False
    try:
        return embedded.ensure_broker(settings.data_dir), True
    except (embedded.EmbeddedError, OSError) as exc:
        raise ConfigError(f"HSEPAY_KAFKA unset and the embedded broker could not start: {exc}") from exc


async def connect_broker(settings: Settings, stop: asyncio.Event | None = None) -> BrokerEndpoint:
    """Find the broker, probe what it is, decide idempotence, and say so in one log line.

    A broker that does not answer yet is waited for (workers may start before Kafka does), until
    `stop`; a broker that refuses the idempotence the settings demand is a ConfigError.
    """
    settings.kafka.security_options()  # a missing SASL setting is a ConfigError before anything starts
    bootstrap, is_embedded = locate_broker(settings)
    backoff = Backoff(settings.saga.max_backoff, initial=0.5)
    while True:
        try:
            info = await probe_broker(bootstrap, **settings.kafka.security_options())
            break
        except BrokerRefusedLogin as exc:
            raise ConfigError(f"HSEPAY_KAFKA_SASL_USERNAME/PASSWORD: {exc}") from None
        except BrokerProbeError as exc:
            log.warning("%s; retrying in %.1fs", exc, backoff.delay)
            if not await backoff.wait(stop or asyncio.Event()):
                raise ConfigError(f"HSEPAY_KAFKA: {exc}") from None
    try:
        idempotence, warning = choose_idempotence(info, settings.kafka.idempotence)
    except BrokerProbeError as exc:
        raise ConfigError(str(exc)) from None
    if warning:
        log.warning("%s", warning)
    origin = "embedded" if is_embedded else "HSEPAY_KAFKA"
    log.info("%s", describe_broker(info, idempotence=idempotence, origin=origin))
    return BrokerEndpoint(bootstrap, idempotence, is_embedded, info)


def describe_db_error(variable: str, url: str, exc: BaseException) -> str:
    """One line naming the variable and the server, for a database that cannot be reached."""
    parsed = make_url(url)
    where = parsed.host or parsed.query.get("host") or "local socket"
    if parsed.port:
        where = f"{where}:{parsed.port}"
    return f"{variable}: cannot use database {parsed.database!r} at {where}: {describe(exc)}"


@dataclass
class Runtime:
    """Resolved settings and lazily built engines and broker for one process."""

    settings: Settings
    db_urls: dict[str, str]
    engines: dict[str, AsyncEngine] = field(default_factory=dict)
    """Engines already built (tests pass theirs); the rest are built on first use."""
    broker: BrokerEndpoint | None = None
    """The broker, once `connect_broker()` found, started or probed it (tests pass theirs)."""

    @classmethod
    def from_settings(cls, settings: Settings, specs: Sequence[ServiceSpec] | None = None) -> Runtime:
        specs = registry.with_database() if specs is None else specs
        return cls(settings=settings, db_urls=ensure_database_urls(settings, [s for s in specs if s.database]))

    def engine(self, service: str) -> AsyncEngine:
        if service not in self.engines:
            self.engines[service] = create_engine(
                self.db_urls[service],
                pool_size=self.settings.db.pool_size,
                pool_timeout=self.settings.db.pool_timeout,
                application_name=f"hsepay-{service}",
            )
        return self.engines[service]

    def variable(self, service: str) -> str:
        return _database(registry.get(service)).variable

    async def check_database(self, service: str) -> None:
        """Raise ConfigError with one readable line if the service database is unreachable."""
        try:
            async with self.engine(service).connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            raise DatabaseUnavailable(describe_db_error(self.variable(service), self.db_urls[service], exc)) from None

    async def ready_engine(self, service: str) -> AsyncEngine:
        """The service engine, after checking that the database answers and has the current schema."""
        await self.check_database(service)
        await self.ensure_schema(service)
        return self.engine(service)

    async def wait_ready_engine(self, service: str, stop: asyncio.Event | None = None) -> AsyncEngine:
        """`ready_engine` for a long-running role: a database that does not answer yet (a server
        restarting, a container starting) is waited for, up to `startup_wait` seconds."""
        deadline = asyncio.get_running_loop().time() + self.settings.saga.startup_wait
        backoff = Backoff(self.settings.saga.max_backoff, initial=0.2)
        while True:
            try:
                return await self.ready_engine(service)
            except Exception as exc:
                if not isinstance(exc, DatabaseUnavailable) and not is_unavailable(exc):
                    raise
                if asyncio.get_running_loop().time() + backoff.delay > deadline:
                    raise
                log.warning("waiting for the %s database: %s", service, exc)
                if not await backoff.wait(stop or asyncio.Event()):
                    raise

    def is_embedded(self, service: str) -> bool:
        return self.settings.db.url_of(self.variable(service)) is None

    async def ensure_schema(self, service: str) -> None:
        """Make sure the service database carries the current schema.

        The embedded database is migrated on first use (nobody else manages it); a configured one
        is left to `hsepay db upgrade`, since migrating production should be a deliberate step.
        """
        head = migrate.head_revision(service)
        async with self.engine(service).connect() as conn:
            revision = await conn.run_sync(migrate.revision_of, service)
            if revision != head:
                await conn.run_sync(migrate.refuse_foreign, service, self.variable(service))
        if revision == head:
            return
        if self.is_embedded(service):
            await self.migrate(service)
            return
        raise ConfigError(
            f"{self.variable(service)}: schema is at revision {revision or 'none'}, expected {head}; "
            f"run `hsepay db upgrade {service}`"
        )

    async def migrate(self, service: str) -> None:
        """Upgrade the service database to head (Alembic, in a thread)."""
        await asyncio.to_thread(migrate.upgrade, service, self.db_urls[service], variable=self.variable(service))

    async def check_distinct_databases(self) -> None:
        """Two services must not share a database, however their URLs spell it: compare what the
        servers say (cluster system identifier and database name)."""
        seen: dict[tuple[int, str], str] = {}
        for service in self.db_urls:
            async with self.engine(service).connect() as conn:
                identity = tuple(
                    (
                        await conn.exec_driver_sql(
                            "SELECT (SELECT system_identifier FROM pg_control_system()), current_database()"
                        )
                    ).one()
                )
            if identity in seen:
                raise ConfigError(
                    f"{seen[identity]} and {self.variable(service)} reach the same database {identity[1]!r} "
                    f"(server {identity[0]}); each service needs its own"
                )
            seen[identity] = self.variable(service)

    async def connect_broker(self, stop: asyncio.Event | None = None) -> BrokerEndpoint:
        """The broker, probed once per process (see `connect_broker`)."""
        if self.broker is None:
            self.broker = await connect_broker(self.settings, stop)
        return self.broker

    def broker_config(self, service: str) -> BrokerConfig:
        """Client settings for one service; `connect_broker()` must have run."""
        endpoint = self.broker
        if endpoint is None:
            raise RuntimeError("connect_broker() first: the broker has not been probed")
        kafka = self.settings.kafka
        return BrokerConfig(
            bootstrap_servers=endpoint.bootstrap_servers,
            idempotence=endpoint.idempotence,
            partitions=kafka.partitions,
            replication_factor=kafka.replication_factor,
            min_insync_replicas=kafka.min_insync_replicas,
            client_id=f"hsepay-{service}",
            delivery_timeout=kafka.delivery_timeout,
            security=kafka.security_options(),
            fetch_max_wait_ms=500 if endpoint.info is not None and not endpoint.info.looks_like_tansu else 5,
        )

    def build_relay(self, spec: ServiceSpec) -> OutboxRelay:
        return OutboxRelay(
            name=spec.name,
            engine=self.engine(spec.name),
            db_url=self.db_urls[spec.name],
            outbox=_database(spec).outbox,
            broker=self.broker_config(spec.name),
            topics=spec.produces(self.settings.kafka),
            settings=self.settings.relay,
            max_backoff=self.settings.saga.max_backoff,
        )

    def build_consumer(self, spec: ServiceSpec, *, static_assignment: bool = False) -> InboxConsumer:
        if spec.handlers is None:
            raise ConfigError(f"the {spec.name} service consumes no events")
        return InboxConsumer(
            name=spec.name,
            engine=self.engine(spec.name),
            inbox_table=_database(spec).inbox,
            handlers=spec.handlers(self.settings),
            broker=self.broker_config(spec.name),
            topics=spec.consumes(self.settings.kafka),
            group_id=self.settings.kafka.group_of(spec.name),
            settings=self.settings.consumer,
            max_backoff=self.settings.saga.max_backoff,
            static_assignment=static_assignment,
        )

    async def dispose(self) -> None:
        for engine in self.engines.values():
            await engine.dispose()
        self.engines.clear()
