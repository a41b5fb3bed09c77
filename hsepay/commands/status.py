"""`hsepay status`: the whole system at a glance, for deployments where each role is its own process."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import typer
from rich.console import Group

from hsepay.commands.common import JsonOption, ServiceArg, built, cell, console, execute, print_json, services

TargetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="A process's metrics port or API, e.g. http://10.0.0.5:9100 (repeatable): its readiness and roles.",
    ),
]


def status(
    service: ServiceArg = "all",
    target: TargetOption = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until Ctrl-C (with --json: a line each time).")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.2, max=3600, help="Seconds between refreshes with --watch.")] = 2.0,
    as_json: JsonOption = False,
) -> None:
    """Backlog, throughput, consumer lag, quarantine and the latest errors of each service, read from the
    databases and the broker, plus the readiness of the processes named with --target.

    Example: hsepay status --watch --target http://127.0.0.1:9101 --target http://127.0.0.1:9102
    """
    from rich.live import Live

    from hsepay.commands.status_snapshot import snapshot

    specs = services(service)
    targets = list(target or [])

    async def body() -> None:
        async with built(specs, broker="find") as system:
            if not watch:
                report = await snapshot(system, specs, targets)
                print_json(report) if as_json else console.print(render(report))
                return
            if as_json:
                while True:
                    print_json(await snapshot(system, specs, targets))
                    await asyncio.sleep(interval)
            with Live(render(await snapshot(system, specs, targets)), console=console, auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(render(await snapshot(system, specs, targets)), refresh=True)

    with contextlib.suppress(KeyboardInterrupt):
        execute(body)


def _number(value: Any) -> str:
    return "?" if value is None else str(value)


def render(report: dict[str, Any]) -> Group:
    """The snapshot as Rich tables: services, processes, latest errors."""
    from rich.table import Table

    table = Table(title="hsepay status", title_justify="left")
    columns = (
        "service",
        "outbox pending",
        "oldest (s)",
        "published/s",
        "applied/s",
        "lag",
        "quarantined",
        "active relay",
    )
    for column in columns:
        table.add_column(column)
    for name, r in report["services"].items():
        outbox, inbox = r.get("outbox") or {}, r.get("inbox") or {}
        relay = outbox.get("active_relay")
        table.add_row(
            cell(name),
            _number(outbox.get("pending")),
            _number(outbox.get("oldest_pending_age_s")) if outbox.get("pending") else "-",
            _number(r.get("published_per_s")),
            _number(r.get("applied_per_s")),
            _number(r.get("lag_total")),
            _number(inbox.get("quarantined")),
            cell(relay["application_name"]) if relay else "none",
        )
    parts: list[Any] = [table]
    if report["processes"]:
        processes = Table(title="processes", title_justify="left")
        for column in ("target", "ready", "roles", "error"):
            processes.add_column(column, overflow="fold")
        for p in report["processes"]:
            roles = []
            for service, values in p["services"].items():
                if values.get("relay_active"):
                    roles.append(f"{service} relay active")
                elif values.get("relay_standby"):
                    roles.append(f"{service} relay standby")
                if "consumer_joined" in values:
                    roles.append(f"{service} consumer {'joined' if values['consumer_joined'] else 'not joined'}")
            processes.add_row(
                cell(p["target"]), "yes" if p["ready"] else "[red]no[/]", cell(", ".join(roles)), cell(p["error"])
            )
        parts.append(processes)
    if report["errors"]:
        errors = Table(title="latest errors", title_justify="left")
        errors.add_column("where", overflow="fold")
        errors.add_column("error", overflow="fold")
        for e in report["errors"][:15]:
            errors.add_row(cell(e["where"]), cell(e["error"]))
        parts.append(errors)
    return Group(*parts)
