"""`hsepay up`: the whole system in one process, one command."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Annotated

import typer

from hsepay import registry
from hsepay.commands.common import EXIT_USAGE, built, console, execute, fail, settings
from hsepay.commands.token import announce_auth
from hsepay.ports import port_problem

if TYPE_CHECKING:
    from rich.table import Table

    from hsepay.system import System

log = logging.getLogger("hsepay")


def _check_port(host: str, port: int, option: str) -> None:
    problem = port_problem(host, port)
    if problem:
        raise fail(f"{host}:{port} is not available ({problem}); choose another with {option}", EXIT_USAGE)


def _connectable(host: str) -> str:
    """An address to reach a server bound to `host` (a wildcard bind is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)


async def _pending(system: System, spec: registry.ServiceSpec) -> int | None:
    from hsepay.relay.backlog import outbox_status
    from hsepay.resilience import is_unavailable

    try:
        async with system.engine(spec.name).connect() as conn:
            return (await outbox_status(conn, spec.database.outbox))["pending"]
    except Exception as exc:
        if is_unavailable(exc):
            return None
        raise


async def _status_table(system: System, workers, urls: dict[str, str], broker: str) -> Table:
    from rich.table import Table

    table = Table(title=f"hsepay up — broker {broker} — Ctrl-C stops", title_justify="left")
    for column in ("service", "API", "outbox pending", "relay", "processed", "duplicates", "quarantined", "errors"):
        table.add_column(column)
    for spec in registry.with_database():
        relay, consumer = workers.relays[spec.name], workers.consumers[spec.name]
        pending = await _pending(system, spec)
        table.add_row(
            spec.name,
            urls[spec.name],
            "?" if pending is None else str(pending),
            "active" if relay.stats.active else "standby",
            str(consumer.stats.processed),
            str(consumer.stats.duplicates),
            str(consumer.stats.quarantined),
            str(relay.stats.errors + consumer.stats.errors),
        )
    return table


READY_TIMEOUT = 60.0


async def _ready(workers, servers, *, timeout: float) -> bool:
    """Wait until the APIs listen, every relay leads or stands by and every consumer holds its partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            all(server.started for server in servers)
            and all(relay.stats.active or relay.stats.standing_by for relay in workers.relays.values())
            and all(consumer.stats.joined for consumer in workers.consumers.values())
        ):
            return True
        await asyncio.sleep(0.02)
    return False


def up(
    host: Annotated[str, typer.Option(help="Interface the APIs bind to.")] = "127.0.0.1",
    payments_port: Annotated[int, typer.Option(min=1, max=65535, help="Payments API port.")] = 8080,
    orders_port: Annotated[int, typer.Option(min=1, max=65535, help="Orders API port.")] = 8081,
    gateway_port: Annotated[int, typer.Option(min=1, max=65535, help="Gateway port (/api/...).")] = 3000,
    gateway: Annotated[bool, typer.Option(help="Run the gateway (--no-gateway leaves its port free).")] = True,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Also serve /metrics and /health/* on this port (every API has them)."),
    ] = None,
    status: Annotated[bool, typer.Option(help="Show a live status panel (on a terminal).")] = True,
) -> None:
    """Run everything: embedded engines (unless URLs are set), migrations, the APIs, the gateway, relays
    and consumers.

    Example: hsepay up   # then: curl -X POST localhost:3000/api/accounts -d '{"user_id": "..."}'
    """
    from rich.live import Live

    from hsepay.roles import api_server, start_workers, wait_for_signal
    from hsepay.servers import serving_metrics

    ports = {"payments": (payments_port, "--payments-port"), "orders": (orders_port, "--orders-port")}
    if gateway:
        ports["gateway"] = (gateway_port, "--gateway-port")
    apis = [spec for spec in registry.SERVICES.values() if spec.name in ports]
    for spec in apis:
        _check_port(host, *ports[spec.name])
    if metrics_port is not None:
        _check_port(host, metrics_port, "--metrics-port")
    configured = settings()
    announce_auth(console, configured.security.auth_secrets)
    # The gateway forwards to the APIs this command starts, wherever HSEPAY_GATEWAY_*_URL point.
    configured = configured.with_overrides(
        gateway=dataclasses.replace(
            configured.gateway,
            payments_url=f"http://{_connectable(host)}:{payments_port}",
            orders_url=f"http://{_connectable(host)}:{orders_port}",
        )
    )
    specs = tuple(dict.fromkeys([*registry.with_database(), *apis]))

    async def body() -> None:
        # On its own embedded broker this process is the only consumer of its groups: no join.
        parts = dict(database="migrate", apps=True, relays=True, consumers=True, only_consumers=True)
        async with built(specs, settings=configured, **parts) as system:
            assert system.broker is not None
            broker = system.broker.bootstrap_servers
            urls = {spec.name: f"http://{host}:{ports[spec.name][0]}" for spec in apis}
            servers = [api_server(system, spec.name, host, ports[spec.name][0]) for spec in apis]
            started = time.monotonic()
            async with serving_metrics(host, metrics_port), start_workers(system) as workers:
                serving = [asyncio.create_task(server.serve()) for server in servers]
                for name, url in urls.items():
                    console.print(f"{name} API: {url}  (docs {url}/schema/swagger)")
                if await _ready(workers, servers, timeout=READY_TIMEOUT):
                    console.print(
                        f"ready in {time.monotonic() - started:.1f}s: relays active, consumers hold their partitions"
                    )
                else:
                    console.print(
                        f"[yellow]not ready after {READY_TIMEOUT:g}s[/]: see the status panel or hsepay status"
                    )
                waiting = asyncio.create_task(wait_for_signal(workers.stop))
                live = (
                    Live(await _status_table(system, workers, urls, broker), console=console, refresh_per_second=2)
                    if status and console.is_terminal
                    else contextlib.nullcontext()
                )
                with live:
                    while not waiting.done() and not any(task.done() for task in serving):
                        await asyncio.wait([waiting, *serving], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                        if isinstance(live, Live):
                            live.update(await _status_table(system, workers, urls, broker))
                console.print("stopping: draining workers and APIs…")
                for server in servers:
                    server.should_exit = True
                workers.stop.set()
                await asyncio.gather(*serving, return_exceptions=True)
                waiting.cancel()
            console.print("stopped")

    execute(body)
