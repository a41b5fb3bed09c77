"""`hsepay outbox status`, `hsepay inbox status|retry`, `hsepay audit`."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError

from hsepay import embedded
from hsepay.audit import run_audit
from hsepay.bootstrap import broker_config, consumer_group, service_handlers, service_tables
from hsepay.commands.common import (
    EXIT_DOMAIN,
    JsonOption,
    console,
    open_runtime,
    print_json,
    print_table,
    run,
    services_arg,
)
from hsepay.config import Settings
from hsepay.relay.inbox_consumer import retry_quarantined
from hsepay.relay.inspect import inbox_status, outbox_status
from hsepay.relay.kafka import consumer_lag

outbox_app = typer.Typer(
    no_args_is_help=True, help="Outbox backlogs and the active relay. Example: hsepay outbox status --json"
)
inbox_app = typer.Typer(
    no_args_is_help=True,
    help="Inbox: processed and quarantined messages, consumer lag. Example: hsepay inbox status payments",
)

ServiceArg = Annotated[str, typer.Argument(help="payments, orders or all")]


@outbox_app.command("status")
def outbox_status_command(service: ServiceArg = "all", as_json: JsonOption = False) -> None:
    """Pending rows, age of the oldest, per topic, and which relay process is active.

    Example: hsepay outbox status orders --json
    """
    services = services_arg(service)

    async def body() -> dict[str, Any]:
        async with open_runtime(services) as rt:
            report = {}
            for name in services:
                async with (await rt.ready_engine(name)).connect() as conn:
                    report[name] = await outbox_status(conn, service_tables(name)[0])
            return report

    report = run(body)
    if as_json:
        print_json(report)
        return
    print_table(
        "Outbox",
        ["service", "pending", "oldest pending (s)", "sent, retained", "active relay"],
        [
            (
                name,
                r["pending"],
                r["oldest_pending_age_s"] if r["oldest_pending_age_s"] is not None else "-",
                r["sent_retained"],
                f"{r['active_relay']['application_name']} (backend pid {r['active_relay']['pid']})"
                if r["active_relay"]
                else "none",
            )
            for name, r in report.items()
        ],
    )
    for name, r in report.items():
        for topic, t in r["topics"].items():
            console.print(f"  {name} → {topic}: {t['pending']} pending, oldest {t['oldest_age_s']}s")


async def _lag(settings: Settings, service: str, topics: tuple[str, ...]) -> dict[str, int] | None:
    bootstrap = settings.kafka.bootstrap_servers or embedded.find_broker(settings.data_dir)
    if not bootstrap:
        return None
    config = broker_config(settings, bootstrap, False, service)
    try:
        return await asyncio.wait_for(consumer_lag(config, consumer_group(settings, service), topics), timeout=10)
    except (KafkaError, OSError, TimeoutError):
        return None


@inbox_app.command("status")
def inbox_status_command(service: ServiceArg = "all", as_json: JsonOption = False) -> None:
    """Processed and quarantined messages, recent quarantined errors, and consumer lag.

    Example: hsepay inbox status payments
    """
    services = services_arg(service)

    async def body() -> dict[str, Any]:
        async with open_runtime(services) as rt:
            report = {}
            for name in services:
                async with (await rt.ready_engine(name)).connect() as conn:
                    report[name] = await inbox_status(conn, service_tables(name)[1], name)
                topics, _ = service_handlers(name, rt.settings)
                report[name]["lag"] = await _lag(rt.settings, name, topics)
            return report

    report = run(body)
    if as_json:
        print_json(report)
        return
    print_table(
        "Inbox",
        ["service", "processed", "quarantined", "lag"],
        [
            (
                name,
                r["processed"],
                r["quarantined"],
                "broker unreachable" if r["lag"] is None else sum(r["lag"].values()),
            )
            for name, r in report.items()
        ],
    )
    for name, r in report.items():
        if r["quarantined_recent"]:
            print_table(
                f"Quarantined in {name} (newest first; `hsepay inbox retry {name}` re-applies)",
                ["event_id", "type", "where", "attempts", "error"],
                [
                    (
                        q["event_id"],
                        q["event_type"],
                        f"{q['topic']}[{q['partition']}]@{q['offset']}",
                        q["attempts"],
                        q["error"],
                    )
                    for q in r["quarantined_recent"]
                ],
            )


@inbox_app.command("retry")
def inbox_retry_command(
    service: Annotated[str, typer.Argument(help="payments or orders")],
    event_id: Annotated[
        list[uuid.UUID] | None, typer.Option("--event-id", help="Only these events (repeatable).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Apply quarantined messages again (e.g. after fixing the cause); exit 1 if some still fail.

    Example: hsepay inbox retry payments --event-id 6f1c4a52-5a43-4d8e-9a64-1b9f4f0a7d21
    """
    if service not in ("payments", "orders"):
        raise typer.BadParameter("expected payments or orders", param_hint="SERVICE")

    async def body() -> tuple[int, int]:
        async with open_runtime((service,)) as rt:
            engine = await rt.ready_engine(service)
            _, handlers = service_handlers(service, rt.settings)
            return await retry_quarantined(
                engine, service_tables(service)[1], consumer=service, handlers=handlers, event_ids=event_id
            )

    done, failed = run(body)
    if as_json:
        print_json({"processed": done, "still_quarantined": failed})
    else:
        console.print(f"{done} applied, {failed} still quarantined")
    if failed:
        raise typer.Exit(EXIT_DOMAIN)


def audit(as_json: JsonOption = False) -> None:
    """Check the money invariants across both databases; exit 1 on any violation.

    Example: hsepay audit --json
    """

    async def body():
        async with open_runtime() as rt:
            payments = await rt.ready_engine("payments")
            orders = await rt.ready_engine("orders")
            async with payments.connect() as p, orders.connect() as o:
                # One repeatable-read snapshot per database, so each side is read consistently.
                await p.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await o.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return await run_audit(p, o)

    report = run(body)
    if as_json:
        print_json(report.to_json())
    else:
        print_table(
            "Audit",
            ["check", "result", "what it means"],
            [(c.name, "ok" if c.ok else f"{c.count} violation(s)", c.description) for c in report.checks],
        )
        for check in report.checks:
            for example in check.violations:
                console.print(f"  [red]✗[/] {check.name}: {example}")
        console.print("  " + ", ".join(f"{k}={v}" for k, v in report.facts.items()))
    if not report.ok:
        raise typer.Exit(EXIT_DOMAIN)
