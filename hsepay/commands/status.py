"""`hsepay status`: the whole system at a glance, for deployments where each role is its own process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Group

from hsepay.commands.common import JsonOption, ServiceArg, built, cell, console, execute, print_json, services
from hsepay.commands.layout import Column, fit, table

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
    databases and the broker, plus the readiness of the processes named with --target. The replication
    line says what each database promises on failover: sync (nothing acknowledged is lost), ASYNC
    (acknowledged orders and deposits can be lost: a warning follows), or none (no standby).

    Example: hsepay status --watch --target http://127.0.0.1:9101 --target http://127.0.0.1:9102
    """

    from hsepay.commands.status_snapshot import snapshot

    specs = services(service)
    targets = list(target or [])

    async def body() -> None:
        async with built(specs, broker="find") as system:
            if not watch:
                report = await snapshot(system, specs, targets)
                print_json(report) if as_json else console.print(render(report, console.width))
                return
            from rich.live import Live

            from hsepay.resilience import sleep_or_stop

            with stopped_by_ctrl_c() as stop:
                if as_json:
                    while not stop.is_set():
                        print_json(await snapshot(system, specs, targets))
                        await sleep_or_stop(stop, interval)
                    return
                with Live(
                    render(await snapshot(system, specs, targets), console.width), console=console, auto_refresh=False
                ) as live:
                    while await sleep_or_stop(stop, interval):
                        live.update(render(await snapshot(system, specs, targets), console.width), refresh=True)

    execute(body)


@contextlib.contextmanager
def stopped_by_ctrl_c() -> Iterator[asyncio.Event]:
    """An event set by the first Ctrl-C (or SIGTERM): the watch ends after the snapshot in hand, instead of
    being cancelled in the middle of one (a broker client cancelled while closing logged a warning).
    A second Ctrl-C interrupts at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def first() -> None:
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first)
    try:
        yield stop
    finally:
        if not stop.is_set():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


def _number(value: Any) -> str:
    return "?" if value is None else str(value)


def _holder(service: str, relay: dict[str, Any] | None) -> str:
    """The active relay as host:pid (its session's application_name without the `hsepay-relay-<service> `
    that the row already says)."""
    if not relay:
        return "none"
    return str(relay["application_name"]).removeprefix(f"hsepay-relay-{service} ")


def _replication(database: dict[str, Any] | None) -> str:
    """What the database promises on failover, in a table cell (red where acknowledged writes can be lost)."""
    if not database:
        return "?"
    standbys = len(database["standbys"])
    text = {"synchronous": f"sync ({standbys} standby)", "asynchronous": f"ASYNC ({standbys} standby)"}.get(
        database["kind"], database["kind"]
    )
    return f"[red]{text}[/]" if database["can_lose_acknowledged_writes"] else text


SERVICE_COLUMNS = (
    Column("service"),
    Column("outbox pending", justify="right"),
    Column("oldest (s)", justify="right"),
    Column("published/s", justify="right"),
    Column("applied/s", justify="right"),
    Column("lag", justify="right"),
    Column("quarantined", justify="right"),
    Column("active relay"),  # host:pid
)


def render(report: dict[str, Any], width: int) -> Group:
    """The snapshot as Rich tables laid out for `width` columns: services (with what each database promises
    on failover, and a warning where an acknowledged write can be lost), processes, latest errors."""
    rows = []
    for name, r in report["services"].items():
        outbox, inbox = r.get("outbox") or {}, r.get("inbox") or {}
        rows.append(
            (
                cell(name),
                _number(outbox.get("pending")),
                _number(outbox.get("oldest_pending_age_s")) if outbox.get("pending") else "-",
                _number(r.get("published_per_s")),
                _number(r.get("applied_per_s")),
                _number(r.get("lag_total")),
                _number(inbox.get("quarantined")),
                cell(_holder(name, outbox.get("active_relay"))),
            )
        )
    parts: list[Any] = [fit(console, "hsepay status", SERVICE_COLUMNS, rows, width)]
    # A line of its own, not a column: the services table must keep one row per service at 120 columns.
    promises = ", ".join(f"{cell(name)} {_replication(r.get('database'))}" for name, r in report["services"].items())
    parts.append(f"replication: {promises}")
    for r in report["services"].values():
        database = r.get("database")
        if database and database["can_lose_acknowledged_writes"]:
            parts.append(f"[bold red]warning:[/] {cell(database['summary'])}")
    if report["processes"]:
        process_rows = []
        for p in report["processes"]:
            roles = []
            for service, values in p["services"].items():
                if values.get("relay_active"):
                    roles.append(f"{service} relay active")
                elif values.get("relay_standby"):
                    roles.append(f"{service} relay standby")
                if "consumer_joined" in values:
                    roles.append(f"{service} consumer {'joined' if values['consumer_joined'] else 'not joined'}")
            process_rows.append(
                (cell(p["target"]), "yes" if p["ready"] else "[red]no[/]", cell(", ".join(roles)), cell(p["error"]))
            )
        columns = (Column("target"), Column("ready"), Column("roles", wraps=True), Column("error", wraps=True))
        parts.append(table("processes", columns, process_rows))
    if report["errors"]:
        error_rows = [(cell(e["where"]), cell(e["error"])) for e in report["errors"][:15]]
        parts.append(table("latest errors", (Column("where", wraps=True), Column("error", wraps=True)), error_rows))
    return Group(*parts)
