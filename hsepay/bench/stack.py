"""The system under test: scratch databases and topics, and hsepay's roles as processes.

`Scratch` is where a run's data lives: fresh `hsepay_bench_*` databases (next to the configured
ones, or on the embedded server), topics and consumer groups named for the run, and, when
HSEPAY_KAFKA is unset, an embedded broker of the bench's own (stopped at the end, so a 100k-message
run leaves nothing in the memory of the broker your `hsepay up` uses).

`Stack` runs roles as `hsepay ...` processes (the chaos harness's `Role`), waits until each says
ready on /health/ready, and stops them; `saga_roles` is every role its own process (the default)
or everything in one `hsepay up`, `relay_roles` is one relay alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.engine import make_url

from hsepay import embedded, migrate, registry
from hsepay.bench.usage import Tracked
from hsepay.bootstrap import build
from hsepay.bootstrap.event_secrets import fresh_environ
from hsepay.chaos.roles import Role, RoleSet
from hsepay.config import Settings
from hsepay.ports import free_ports
from hsepay.relay.probe import describe as describe_broker
from hsepay.scratch import scratch_databases
from hsepay.system import System

__all__ = ["RoleSpec", "Scratch", "Stack", "relay_roles", "saga_roles"]

log = logging.getLogger(__name__)

# Settings the bench decides for its roles; the caller's other HSEPAY_* (batch sizes, pool sizes,
# timeouts, ...) pass through, so that `HSEPAY_RELAY_BATCH=2000 hsepay bench relay` measures that.
_OWN = (
    "HSEPAY_PAYMENTS_DB",
    "HSEPAY_ORDERS_DB",
    "HSEPAY_KAFKA",
    "HSEPAY_ORDERS_TOPIC",
    "HSEPAY_PAYMENT_STATUS_TOPIC",
    "HSEPAY_GROUP_PREFIX",
    "HSEPAY_AUTH_SECRET",
    "HSEPAY_RATE_LIMIT",
    "HSEPAY_METRICS_PORT",
    "HSEPAY_LOG_FORMAT",
)


@dataclass
class Scratch:
    """A run's databases, topics and broker, and the environment every role gets."""

    environ: dict[str, str]
    work_dir: Path
    embedded_postgres: Path | None
    """Home of the embedded server the databases are on (None: the configured server)."""
    broker_home: Path | None
    """Home of the bench's own embedded broker (None: HSEPAY_KAFKA)."""
    auth: bool

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.environ)

    @classmethod
    def prepare(
        cls, settings: Settings, databases: Mapping[str, str], *, auth: bool = False, name: str = "run"
    ) -> Scratch:
        """Fresh databases (service -> database name), migrated; topics and groups of the run's own.
        Raises ConfigError, EmbeddedError, psycopg.Error or OSError."""
        work_dir = settings.data_dir / "bench" / name
        embedded.stop_broker(work_dir / "broker")  # left running by a run that was killed
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        urls, pg_home = scratch_databases(settings, databases, settings.data_dir)
        for service, url in urls.items():
            migrate.upgrade(service, url, variable="bench")
        broker_home = None
        bootstrap = settings.kafka.bootstrap_servers
        if not bootstrap:
            broker_home = work_dir / "broker"
            bootstrap = embedded.ensure_broker(broker_home, port=0)
        suffix = uuid.uuid4().hex[:8]
        environ = {k: v for k, v in os.environ.items() if k.startswith("HSEPAY_") and k not in _OWN}
        environ.update(
            HSEPAY_DATA_DIR=str(settings.data_dir),
            HSEPAY_KAFKA=bootstrap,
            HSEPAY_ORDERS_TOPIC=f"bench-{suffix}-orders",
            HSEPAY_PAYMENT_STATUS_TOPIC=f"bench-{suffix}-payment-status",
            HSEPAY_GROUP_PREFIX=f"bench-{suffix}",
            # The whole load comes from one address: the per-caller limit would measure itself.
            HSEPAY_RATE_LIMIT="0",
            HSEPAY_LOG_FORMAT="json",
        )
        if auth:
            environ["HSEPAY_AUTH_SECRET"] = secrets.token_urlsafe(48)
        # Events signed as on any shared broker; the caller's secrets, if set, pass through.
        environ = {**fresh_environ(spec.name for spec in registry.with_database()), **environ}
        for service, url in urls.items():
            environ[f"HSEPAY_{service.upper()}_DB"] = url
        return cls(environ, work_dir, pg_home, broker_home, auth)

    async def system(self, services: Iterable[str]) -> System:
        """The bench process's own access to the run's databases and broker (`close` it at the end)."""
        return await build(self.settings, [registry.get(service) for service in services], broker="connect")

    async def close(self, system: System) -> None:
        """Stop the bench's own broker, or delete the run's topics from a configured one (best effort;
        its consumer groups expire by themselves: aiokafka cannot delete groups). The databases stay,
        for a look afterwards; the next run drops them. Then close the bench's `system`."""
        try:
            await self._forget_topics(system)
        finally:
            await system.close()

    async def _forget_topics(self, system: System) -> None:
        if self.broker_home is not None:
            await asyncio.to_thread(embedded.stop_broker, self.broker_home)
            return
        broker = next((service.broker for service in system.services.values() if service.broker is not None), None)
        if broker is None:
            return
        kafka = system.settings.kafka
        admin = AIOKafkaAdminClient(**broker.client_options())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            topics = [t for t in (kafka.orders_topic, kafka.payment_status_topic) if t in existing]
            if topics:
                await admin.delete_topics(topics)
        except Exception as exc:  # a cleanup never decides a run
            log.info("bench: the run's topics were not deleted: %s", exc)
        finally:
            await admin.close()

    def tracked_engines(self) -> list[Tracked]:
        """The engines' processes whose CPU the bench can see: the embedded ones, and configured ones
        that listen on this machine (as far as this user may look). Their CPU includes any other work
        they do meanwhile, which the report says."""
        found = []
        if self.broker_home is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                pid = int(json.loads((self.broker_home / "broker.json").read_text())["pid"])
                found.append(Tracked("broker (embedded)", pid))
        else:
            for address in self.environ["HSEPAY_KAFKA"].split(","):
                host, _, port = address.strip().rpartition(":")
                pid = _local_listener(host, int(port)) if port.isdigit() else None
                if pid is not None:
                    found.append(Tracked(f"broker (pid {pid}, {address.strip()})", pid))
        if self.embedded_postgres is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.embedded_postgres / "pg" / "postmaster.pid").read_text().split()[0])
                found.append(Tracked("postgres (embedded, every backend)", pid, with_children=True, own_memory=False))
        else:
            url = make_url(self.environ["HSEPAY_ORDERS_DB"])
            pid = _local_listener(url.host or "", url.port or 5432)
            if pid is not None:
                found.append(Tracked(f"postgres (pid {pid}, every backend)", pid, with_children=True, own_memory=False))
        return found


async def describe_engines(system: System) -> dict[str, str]:
    """One line per engine for the report: which PostgreSQL and which broker."""
    described = {}
    with contextlib.suppress(Exception):
        service = "orders" if "orders" in system.services else next(iter(system.services))
        async with system.engine(service).connect() as conn:
            described["postgres"] = (await conn.exec_driver_sql("SELECT version()")).scalar_one().split(",")[0]
    endpoint = system.broker
    if endpoint is not None and endpoint.info is not None:
        described["broker"] = describe_broker(endpoint.info, idempotence=endpoint.idempotence)
    return described


@dataclass(frozen=True)
class RoleSpec:
    name: str
    args: list[str]
    ready_url: str


def saga_roles(*, one_process: bool, auth: bool) -> tuple[list[RoleSpec], dict[str, int]]:
    """Every role of both services, each its own process (or all in one `hsepay up`), and the API ports."""
    free = iter(free_ports(6))
    ports = {"payments": next(free), "orders": next(free)}
    if one_process:
        metrics = next(free)
        args = ["up", "--no-gateway", "--no-status", "--metrics-port", str(metrics)]
        args += ["--payments-port", str(ports["payments"]), "--orders-port", str(ports["orders"])]
        return [RoleSpec("up", args, f"http://127.0.0.1:{metrics}")], ports
    roles = []
    for service in ("payments", "orders"):
        api = ["serve", service, "--port", str(ports[service])] + ([] if auth else ["--insecure-no-auth"])
        roles.append(RoleSpec(f"api-{service}", api, f"http://127.0.0.1:{ports[service]}"))
        for kind in ("relay", "consume"):
            metrics = next(free)
            roles.append(
                RoleSpec(
                    f"{kind}-{service}", [kind, service, "--metrics-port", str(metrics)], f"http://127.0.0.1:{metrics}"
                )
            )
    return roles, ports


def relay_roles(service: str = "orders") -> list[RoleSpec]:
    (metrics,) = free_ports(1)
    return [
        RoleSpec(f"relay-{service}", ["relay", service, "--metrics-port", str(metrics)], f"http://127.0.0.1:{metrics}")
    ]


@dataclass
class Stack:
    """Roles as processes with the scratch environment; logs in the scratch work directory."""

    scratch: Scratch
    specs: list[RoleSpec]
    roles: RoleSet = field(default_factory=RoleSet)
    started_at: float = 0.0
    ready_s: float | None = None

    def __post_init__(self) -> None:
        for spec in self.specs:
            self.roles.add(Role(spec.name, spec.args, self.scratch.environ, self.scratch.work_dir))

    async def start(self, timeout: float = 120.0, only: Iterable[str] | None = None) -> float:
        """Start every role (or those named in `only`) and wait until each answers 200 on
        /health/ready; seconds it took."""
        self.started_at = time.monotonic()
        wanted = [spec for spec in self.specs if only is None or spec.name in set(only)]
        for spec in wanted:
            self.roles.roles[spec.name].start()
        await self.roles.wait_ready({spec.name: spec.ready_url for spec in wanted}, timeout)
        self.ready_s = time.monotonic() - self.started_at
        return self.ready_s

    async def start_rest(self, timeout: float = 120.0) -> float:
        """Start the roles `start(only=...)` left out and wait until they are ready; seconds it took."""
        began = time.monotonic()
        rest = [spec for spec in self.specs if self.roles.roles[spec.name].proc is None]
        for spec in rest:
            self.roles.roles[spec.name].start()
        await self.roles.wait_ready({spec.name: spec.ready_url for spec in rest}, timeout)
        return time.monotonic() - began

    def tracked(self) -> list[Tracked]:
        # with_children: `hsepay serve` runs its API in granian worker processes under it
        return [Tracked(name, role.pid, with_children=True) for name, role in self.roles.roles.items() if role.pid]

    def died(self) -> dict[str, int | None]:
        return {
            name: self.roles.roles[name].proc.returncode
            for name in self.roles.dead()
            if self.roles.roles[name].proc is not None  # never started (held back) is not dead
        }

    def stop(self) -> dict[str, int | None]:
        return self.roles.stop_all()


API_ROLES = ("api-payments", "api-orders")
"""The roles of `saga_roles` that serve HTTP (the rest are workers)."""


def _local_listener(host: str, port: int) -> int | None:
    """The pid listening on a loopback `host:port`, if this user may see it."""
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        return None
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    return None
