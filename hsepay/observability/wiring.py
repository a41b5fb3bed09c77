"""Which sources each role registers: the one place that maps roles to what they report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hsepay.observability.probes import BrokerSource, ConsumerSource, CounterSource, DatabaseSource, RelaySource
from hsepay.observability.sources import Source

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.ext.asyncio import AsyncEngine

    from hsepay.bootstrap import Runtime
    from hsepay.registry import ServiceSpec
    from hsepay.roles import Workers

__all__ = ["api_sources", "worker_sources"]


def database_source(spec: ServiceSpec, engine: AsyncEngine) -> DatabaseSource:
    assert spec.database is not None
    return DatabaseSource(spec.name, engine, spec.database.outbox, spec.database.inbox)


def api_sources(service: str, engine: AsyncEngine, outbox: Table, inbox: Table) -> list[Source]:
    """An API depends on its database only: it takes orders while the broker is down (the outbox keeps them)."""
    return [DatabaseSource(service, engine, outbox, inbox)]


def worker_sources(rt: Runtime, workers: Workers) -> list[Source]:
    from hsepay import registry

    found: list[Source] = []
    names = dict.fromkeys([*workers.relays, *workers.consumers])
    for name in names:
        found.append(database_source(registry.get(name), rt.engine(name)))
    if names and rt.broker is not None:
        found.append(BrokerSource(rt.broker_config(next(iter(names)))))
    found += [RelaySource(name, relay) for name, relay in workers.relays.items()]
    found += [ConsumerSource(name, consumer) for name, consumer in workers.consumers.items()]
    if workers.counts:
        found.append(CounterSource(("background",), lambda: workers.counts))
    return found
