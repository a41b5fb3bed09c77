"""`hsepay up`: the whole system in one process, one command."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.text import Text

from hsepay import registry
from hsepay.commands.common import EXIT_USAGE, built, console, execute, fail, settings
from hsepay.commands.layout import Column, fit
from hsepay.commands.token import announce_auth
from hsepay.ports import port_problem

if TYPE_CHECKING:
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


PANEL_COLUMNS = (
    Column("service"),
    Column("outbox pending", justify="right"),
    Column("relay"),
    Column("processed", justify="right"),
    Column("duplicates", justify="right"),
    Column("quarantined", justify="right"),
    Column("errors", justify="right"),
)


async def _counters(system: System, workers) -> list[tuple[str, ...]]:
    """One row of PANEL_COLUMNS per service with a database."""
    rows = []
    for spec in registry.with_database():
        relay, consumer = workers.relays[spec.name], workers.consumers[spec.name]
        pending = await _pending(system, spec)
        rows.append(
            (
                spec.name,
                "?" if pending is None else str(pending),
                "active" if relay.stats.active else "standby",
                str(consumer.stats.processed),
                str(consumer.stats.duplicates),
                str(consumer.stats.quarantined),
                str(relay.stats.errors + consumer.stats.errors),
            )
        )
    return rows


def panel(heading: Sequence[Text], rows: Sequence[Sequence[str]], width: int) -> Group:
    """The live panel: what must stay on screen (auth, where the APIs are, how to stop) above the
    counters, laid out for `width` columns; log lines scroll above it."""
    return Group(*heading, fit(console, None, PANEL_COLUMNS, rows, width))


def heading_lines(auth_on: bool, broker: str, urls: dict[str, str]) -> list[Text]:
    """The lines the live panel keeps on screen: auth on or off (the banner above scrolls away as logs
    arrive), the broker, how to stop, and each API with its docs."""
    lines = [
        Text("auth on: bearer tokens required (hsepay token issue USER_ID)", style="green")
        if auth_on
        else Text("AUTHENTICATION IS OFF: anyone who reaches these ports can spend any user's money", style="bold red"),
        Text(f"hsepay up, broker {broker}; Ctrl-C stops", style="bold"),
    ]
    lines += [Text(f"{name:<8} {url}  docs {url}/schema/swagger") for name, url in urls.items()]
    return lines


def since_start() -> float:
    """Seconds since this process started (the clock a user's `time hsepay up` reads), not since the
    engines were up. On Linux both ends are read on the boot clock: psutil's create_time adds the boot
    time, which /proc/stat gives in whole seconds, so it was up to a second off (CI saw 1.7 s said
    after 1.3 s of wall time)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, counted after the command name
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, AttributeError, IndexError, ValueError):  # not Linux
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())


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

    Example: hsepay up   then, from another terminal, open an account through the gateway:

    curl -X POST localhost:3000/api/accounts -H 'Content-Type: application/json' \\
    -d '{"user_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"}'
    """
    from rich.live import Live

    from hsepay.heap import settle_after_startup
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
    announce_auth(console, configured.security.auth_secrets, configured.data_dir)
    # The gateway forwards to the APIs this command starts, wherever HSEPAY_GATEWAY_*_URL point, and
    # the APIs believe the X-Forwarded-For of the address it connects from (each client its own budget).
    security = configured.security
    if gateway:
        gateway_address = ipaddress.ip_network(_connectable(host).strip("[]"))
        security = dataclasses.replace(security, trusted_proxies=(*security.trusted_proxies, gateway_address))
    configured = configured.with_overrides(
        gateway=dataclasses.replace(
            configured.gateway,
            payments_url=f"http://{_connectable(host)}:{payments_port}",
            orders_url=f"http://{_connectable(host)}:{orders_port}",
        ),
        security=security,
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
            async with serving_metrics(host, metrics_port), start_workers(system) as workers:
                serving = [asyncio.create_task(server.serve()) for server in servers]
                heading = heading_lines(bool(system.settings.security.auth_secrets), broker, urls)
                show_panel = status and console.is_terminal
                if not show_panel:  # the live panel shows them, with the auth line, and keeps them on screen
                    for line in heading[2:]:
                        console.print(line)
                if await _ready(workers, servers, timeout=READY_TIMEOUT):
                    console.print(
                        f"ready in {since_start():.1f}s (since the process started): relays active, "
                        "consumers hold their partitions"
                    )
                else:
                    console.print(
                        f"[yellow]not ready after {READY_TIMEOUT:g}s[/]: see the status panel or hsepay status"
                    )
                settle_after_startup()
                waiting = asyncio.create_task(wait_for_signal(workers.stop))
                live = (
                    Live(
                        panel(heading, await _counters(system, workers), console.width),
                        console=console,
                        refresh_per_second=2,
                    )
                    if show_panel
                    else contextlib.nullcontext()
                )
                with live:
                    while not waiting.done() and not any(task.done() for task in serving):
                        await asyncio.wait([waiting, *serving], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                        if isinstance(live, Live):
                            live.update(panel(heading, await _counters(system, workers), console.width))
                console.print("stopping: draining workers and APIs…")
                for server in servers:
                    server.should_exit = True
                workers.stop.set()
                await asyncio.gather(*serving, return_exceptions=True)
                waiting.cancel()
            console.print("stopped")

    execute(body)
