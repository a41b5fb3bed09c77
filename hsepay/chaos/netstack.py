"""The engines of a network-fault run, each behind its own proxy: PostgreSQL on TCP and the broker.

The roles reach everything through Toxiproxy (`roles_environ`); the run itself — accounts, the
sampler, the drain, the audit — goes straight to the engines (`observer_environ`), so what it
measures is never bent by the faults it injects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from hsepay import embedded
from hsepay.chaos.network import NetworkControl, Toxiproxy
from hsepay.ports import free_port

__all__ = ["NetStack", "TcpPostgres", "network_stack"]

SERVICES = ("payments", "orders")


@dataclass
class TcpPostgres:
    """A private embedded PostgreSQL listening on a loopback TCP port (stopped and started by pg-restart)."""

    data_dir: Path
    port: int

    async def stop(self) -> None:
        await asyncio.to_thread(embedded.stop_postgres, self.data_dir)

    async def start(self) -> None:
        await asyncio.to_thread(embedded.start_postgres_on_tcp, self.data_dir, self.port)


@dataclass
class NetStack:
    network: NetworkControl
    postgres: TcpPostgres
    broker_home: Path
    roles_environ: dict[str, str] = field(default_factory=dict)
    """HSEPAY_PAYMENTS_DB, HSEPAY_ORDERS_DB and HSEPAY_KAFKA through the proxies."""
    observer_environ: dict[str, str] = field(default_factory=dict)
    """The same, straight to the engines."""


def _through(url: str, proxy: str) -> str:
    host, _, port = proxy.rpartition(":")
    return make_url(url).set(host=host, port=int(port)).render_as_string(hide_password=False)


@contextlib.contextmanager
def network_stack(work_dir: Path, toxiproxy_binary: Path, *, prefix: str = "netfault") -> Iterator[NetStack]:
    """PostgreSQL on TCP with one database per service, a Tansu broker, Toxiproxy, and a proxy for
    `pg-payments`, `pg-orders` and `broker`; everything stopped at the end."""
    work_dir.mkdir(parents=True, exist_ok=True)
    toxiproxy = Toxiproxy(toxiproxy_binary, work_dir / "toxiproxy.log")
    pg_home, broker_home = work_dir / "pg-home", work_dir / "broker-home"
    postgres = TcpPostgres(pg_home, free_port())
    try:
        server = embedded.start_postgres_on_tcp(pg_home, postgres.port)
        direct: dict[str, str] = {}
        with psycopg.connect(server, autocommit=True) as conn:
            for service in SERVICES:
                name = f"{prefix}_{service}"
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                direct[service] = make_url(server).set(database=name).render_as_string(hide_password=False)
        toxiproxy.start()
        network = NetworkControl(toxiproxy)
        stack = NetStack(network, postgres, broker_home)
        for service in SERVICES:
            proxy = network.add(f"pg-{service}", f"127.0.0.1:{postgres.port}")
            variable = f"HSEPAY_{service.upper()}_DB"
            stack.observer_environ[variable] = direct[service]
            stack.roles_environ[variable] = _through(direct[service], proxy)
        broker_port = free_port()
        broker_proxy = network.add("broker", f"127.0.0.1:{broker_port}")
        proxy_port = int(broker_proxy.rpartition(":")[2])
        broker = embedded.ensure_broker(broker_home, port=broker_port, advertised_port=proxy_port)
        if broker != f"127.0.0.1:{broker_port}":  # the port was taken meanwhile: follow the broker
            network.proxies.pop("broker")
            raise embedded.EmbeddedError(f"the broker could not take port {broker_port}; run again")
        stack.roles_environ["HSEPAY_KAFKA"] = stack.observer_environ["HSEPAY_KAFKA"] = broker_proxy
        yield stack
    finally:
        embedded.stop_broker(broker_home)
        toxiproxy.stop()
        embedded.stop_postgres(pg_home)
