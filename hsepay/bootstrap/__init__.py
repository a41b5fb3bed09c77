"""The one place that builds things: `build(settings, specs)` turns settings into a ready `System`.

It checks and probes once, in this order: the database URLs (the embedded PostgreSQL is started for
those not configured), each database reachable (waited for, for a long-running role), no two
services on one database, each schema current (or migrated), the broker (found, or found and
probed), and last the parts each service runs in this process: its relay, its consumer, its app and
the background jobs of its roles. Only entry points build a system (the commands, `hsepay.asgi`);
everything else is handed the system or the parts it needs.

A build that asks for no broker and no app imports neither aiokafka nor the web framework: `hsepay
account list` pays for the database alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from types import MappingProxyType
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.bootstrap.databases import (
    DatabaseUnavailable,
    check_distinct_databases,
    ensure_database_urls,
    ensure_schema,
    open_engines,
    reachable,
)
from hsepay.config import Settings
from hsepay.registry import ServiceSpec
from hsepay.system import BrokerEndpoint, Service, System

__all__ = ["BrokerStep", "DatabaseStep", "DatabaseUnavailable", "assemble", "build", "build_unchecked", "built"]

DatabaseStep = Literal["check", "migrate"]
"""check: each schema must be current (the embedded database is migrated on first use); migrate:
each is upgraded to the newest schema (`hsepay up`, `hsepay db upgrade`)."""
BrokerStep = Literal["none", "find", "connect"]
"""none: no broker; find: the configured one or a running embedded one, neither started nor probed
(status views); connect: found, started if embedded, probed and waited for (every role that uses it)."""


async def build(
    settings: Settings,
    specs: Sequence[ServiceSpec],
    *,
    database: DatabaseStep = "check",
    wait: bool = False,
    broker: BrokerStep | None = None,
    apps: bool = False,
    relays: bool = False,
    consumers: bool = False,
    only_consumers: bool = False,
    stop: asyncio.Event | None = None,
) -> System:
    """The checked, ready parts of `specs` for this process (see the module's docstring).

    `wait`: a long-running role waits up to HSEPAY_STARTUP_WAIT for a database that does not answer
    yet. `broker` defaults to connect when relays or consumers are built, else none.
    `only_consumers`: this process's consumers are the only members of their groups (`hsepay up` on
    its embedded broker), so they read every partition without a group join. ConfigError (one line
    naming the variable) for anything that is not right; the engines are disposed of then.
    """
    with_db = [spec for spec in specs if spec.database is not None]
    urls = ensure_database_urls(settings, with_db)
    engines = open_engines(settings, urls)
    try:
        for spec in with_db:
            await reachable(settings, spec, engines[spec.name], urls[spec.name], wait=wait, stop=stop)
        await check_distinct_databases(with_db, engines)
        for spec in with_db:
            await ensure_schema(settings, spec, engines[spec.name], urls[spec.name], upgrade=database == "migrate")
        endpoint = await _broker(settings, broker or ("connect" if relays or consumers else "none"), stop)
        return assemble(
            settings,
            specs,
            engines=engines,
            urls=urls,
            broker=endpoint,
            apps=apps,
            relays=relays,
            consumers=consumers,
            only_consumers=only_consumers,
        )
    except BaseException:
        for engine in engines.values():
            await engine.dispose()
        raise


@contextlib.asynccontextmanager
async def built(settings: Settings, specs: Sequence[ServiceSpec], **parts) -> AsyncIterator[System]:
    """`build(settings, specs, **parts)` for the block; its engines are disposed of at the end."""
    system = await build(settings, specs, **parts)
    try:
        yield system
    finally:
        await system.close()


def build_unchecked(settings: Settings, specs: Sequence[ServiceSpec], *, apps: bool = False) -> System:
    """Engines and apps with nothing checked and no broker: for an API worker process of `hsepay
    serve`, whose parent checked the database before it started the workers."""
    with_db = [spec for spec in specs if spec.database is not None]
    urls = ensure_database_urls(settings, with_db)
    return assemble(settings, specs, engines=open_engines(settings, urls), urls=urls, apps=apps)


def assemble(
    settings: Settings,
    specs: Sequence[ServiceSpec],
    *,
    engines: Mapping[str, AsyncEngine],
    urls: Mapping[str, str],
    broker: BrokerEndpoint | None = None,
    apps: bool = False,
    relays: bool = False,
    consumers: bool = False,
    only_consumers: bool = False,
) -> System:
    """The parts of `specs` from engines and a broker that are known good (`build` checked them;
    tests hand in their own). No I/O."""
    if (relays or consumers) and broker is None:
        raise ValueError("relays and consumers need a broker")
    services: dict[str, Service] = {}
    for spec in specs:
        engine = engines.get(spec.name)
        url = urls.get(spec.name)
        service = Service(spec, engine, url)
        if broker is not None and engine is not None and url is not None:
            from hsepay.bootstrap.workers import worker_parts  # imports aiokafka: only for a system with a broker

            service = worker_parts(
                settings, service, broker, relays=relays, consumers=consumers, only_consumers=only_consumers
            )
        if apps:
            service = dataclasses.replace(service, app=spec.create_app(engine, settings))
        services[spec.name] = service
    return System(settings, MappingProxyType(services), broker)


async def _broker(settings: Settings, step: BrokerStep, stop: asyncio.Event | None) -> BrokerEndpoint | None:
    if step == "none":
        return None
    from hsepay.bootstrap.broker import connect_broker, find_broker  # imports aiokafka: only when asked for

    return await connect_broker(settings, stop) if step == "connect" else find_broker(settings)
