"""A built system: for each service a process uses, its parts, made once and ready.

`hsepay.bootstrap.build` makes one: the engines checked, the schema current, the broker probed, and
the relays, consumers, apps and background jobs constructed. A `System` is frozen: nothing is made
on first use and nothing is swapped afterwards. Entry points (the commands, the ASGI worker entry)
build a system; everything else is handed the parts it needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litestar import Litestar
    from sqlalchemy.ext.asyncio import AsyncEngine

    from hsepay.config import Settings
    from hsepay.periodic import Periodic
    from hsepay.registry import ServiceSpec
    from hsepay.relay.broker import BrokerConfig
    from hsepay.relay.consumer import InboxConsumer
    from hsepay.relay.outbox import OutboxRelay
    from hsepay.relay.probe import BrokerInfo

__all__ = ["BrokerEndpoint", "Service", "System"]


@dataclass(frozen=True)
class BrokerEndpoint:
    """The broker a system talks to, as found (and, for the roles that use it, probed) at build time."""

    bootstrap_servers: str
    idempotence: bool
    embedded: bool
    info: BrokerInfo | None = None
    """What the start-up probe found (None where the broker was only found, not probed: status views)."""


@dataclass(frozen=True)
class Service:
    """One service's parts in this process; a part this process does not run is None."""

    spec: ServiceSpec
    engine: AsyncEngine | None = None
    """Its database, reachable and at the current schema when built (None: a service without one)."""
    url: str | None = None
    broker: BrokerConfig | None = None
    """Client settings of its Kafka clients (None: this system has no broker)."""
    app: Litestar | None = None
    relay: OutboxRelay | None = None
    consumer: InboxConsumer | None = None
    jobs: tuple[Periodic, ...] = ()
    """The background jobs of its relay and consumer roles (purges, re-drive), run beside them."""

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class System:
    settings: Settings
    services: Mapping[str, Service]
    broker: BrokerEndpoint | None = None

    def __getitem__(self, service: str) -> Service:
        return self.services[service]

    def engine(self, service: str) -> AsyncEngine:
        """The engine of a service of this system that has a database."""
        engine = self.services[service].engine
        if engine is None:
            raise KeyError(f"the {service} service has no database")
        return engine

    async def close(self) -> None:
        """Dispose of the engines (the roles must have stopped)."""
        for service in self.services.values():
            if service.engine is not None:
                await service.engine.dispose()
