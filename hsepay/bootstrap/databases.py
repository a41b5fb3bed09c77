"""The databases of a system: settings become URLs and engines, each checked once before use.

Functions named `ensure_*` may start the embedded PostgreSQL; nothing else here starts anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay import embedded, migrate, registry
from hsepay.config import ConfigError, Settings, normalise_db_url
from hsepay.config.dburl import endpoints
from hsepay.db import create_engine
from hsepay.registry import ServiceSpec
from hsepay.resilience import Backoff, describe, is_unavailable

__all__ = [
    "DatabaseUnavailable",
    "check_database",
    "check_distinct_databases",
    "describe_db_error",
    "ensure_database_urls",
    "ensure_schema",
    "open_engines",
    "reachable",
    "say_promise",
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


def open_engines(settings: Settings, urls: Mapping[str, str]) -> dict[str, AsyncEngine]:
    """An engine per service database (no connection is made yet)."""
    return {
        service: create_engine(
            url,
            pool_size=settings.db.pool_size,
            pool_timeout=settings.db.pool_timeout,
            application_name=f"hsepay-{service}",
            policy=settings.db.policy(),
        )
        for service, url in urls.items()
    }


def describe_db_error(variable: str, url: str, exc: BaseException) -> str:
    """One line naming the variable and the server, for a database that cannot be reached."""
    where = ", ".join(endpoints(url))
    return f"{variable}: cannot use database {make_url(url).database!r} at {where}: {describe(exc)}"


async def check_database(spec: ServiceSpec, engine: AsyncEngine, url: str) -> None:
    """Raise DatabaseUnavailable with one readable line if the service database is unreachable."""
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise DatabaseUnavailable(describe_db_error(_database(spec).variable, url, exc)) from None


async def reachable(
    settings: Settings,
    spec: ServiceSpec,
    engine: AsyncEngine,
    url: str,
    *,
    wait: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """`check_database`; with `wait` (a long-running role), a database that does not answer yet (a
    server restarting, a container starting) is waited for, up to `startup_wait` seconds, and the
    role then says what that database promises on failover."""
    if not wait:
        await check_database(spec, engine, url)
        return
    await _wait_for(settings, spec, engine, url, stop)
    await say_promise(spec, engine)


async def say_promise(spec: ServiceSpec, engine: AsyncEngine) -> None:
    """Log what the database promises an acknowledged write on failover (see `hsepay.replication`),
    at a role's start: info when nothing acknowledged can be lost, a warning otherwise."""
    from hsepay.replication import read_promise

    try:
        async with engine.connect() as conn:
            promise = await read_promise(conn)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        log.warning("%s database: what it promises on failover is unknown: %s", spec.name, describe(exc))
        return
    log.log(
        logging.WARNING if promise.can_lose_acknowledged_writes else logging.INFO, "%s", promise.describe(spec.name)
    )


async def _wait_for(
    settings: Settings, spec: ServiceSpec, engine: AsyncEngine, url: str, stop: asyncio.Event | None
) -> None:
    deadline = asyncio.get_running_loop().time() + settings.saga.startup_wait
    backoff = Backoff(settings.saga.max_backoff, initial=0.2)
    while True:
        try:
            await check_database(spec, engine, url)
            return
        except DatabaseUnavailable as exc:
            if asyncio.get_running_loop().time() + backoff.delay > deadline:
                raise
            log.warning("waiting for the %s database: %s", spec.name, exc)
            if not await backoff.wait(stop or asyncio.Event()):
                raise


async def ensure_schema(settings: Settings, spec: ServiceSpec, engine: AsyncEngine, url: str, *, upgrade: bool) -> None:
    """Make sure the service database carries the current schema.

    With `upgrade` (`hsepay up`, `hsepay db upgrade`) it is migrated to head. Otherwise the embedded
    database is migrated on first use (nobody else manages it), and a configured one is left to
    `hsepay db upgrade`, since migrating production should be a deliberate step.
    """
    variable = _database(spec).variable
    if not upgrade:
        head = migrate.head_revision(spec.name)
        async with engine.connect() as conn:
            revision = await conn.run_sync(migrate.revision_of, spec.name)
            if revision != head:
                await conn.run_sync(migrate.refuse_foreign, spec.name, variable)
        if revision == head:
            return
        if settings.db.url_of(variable) is not None:
            raise ConfigError(
                f"{variable}: schema is at revision {revision or 'none'}, expected {head}; "
                f"run `hsepay db upgrade {spec.name}`"
            )
    try:
        await asyncio.to_thread(migrate.upgrade, spec.name, url, variable=variable)
    except DBAPIError as exc:
        raise ConfigError(describe_db_error(variable, url, exc)) from None


async def check_distinct_databases(specs: Sequence[ServiceSpec], engines: Mapping[str, AsyncEngine]) -> None:
    """Two services must not share a database, however their URLs spell it: compare what the
    servers say (cluster system identifier and database name)."""
    seen: dict[tuple[int, str], str] = {}
    for spec in specs:
        variable = _database(spec).variable
        async with engines[spec.name].connect() as conn:
            identity = tuple(
                (
                    await conn.exec_driver_sql(
                        "SELECT (SELECT system_identifier FROM pg_control_system()), current_database()"
                    )
                ).one()
            )
        if identity in seen:
            raise ConfigError(
                f"{seen[identity]} and {variable} reach the same database {identity[1]!r} "
                f"(server {identity[0]}); each service needs its own"
            )
        seen[identity] = variable
