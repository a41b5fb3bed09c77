"""`hsepay inbox status|retry`: processed and quarantined messages, consumer lag, re-applying poison."""

from __future__ import annotations

import functools
import uuid
from typing import Annotated, Any

import typer

from hsepay.commands.common import (
    EXIT_DOMAIN,
    JsonOption,
    ServiceArg,
    built,
    console,
    execute,
    print_json,
    print_table,
    services,
    uuid_argument,
)
from hsepay.commands.status_common import ask_broker, finish

app = typer.Typer(
    no_args_is_help=True,
    help="Inbox: processed and quarantined messages, consumer lag. Example: hsepay inbox status payments",
)


@app.command("status")
def status(service: ServiceArg = "all", as_json: JsonOption = False) -> None:
    """Processed and quarantined messages, recent quarantined errors, and consumer lag.

    Exit 2 if the broker cannot be asked for the lag.

    Example: hsepay inbox status payments
    """
    specs = services(service)

    async def body() -> dict[str, Any]:
        from hsepay.relay.broker import consumer_lag
        from hsepay.relay.quarantine import inbox_status

        async with built(specs, broker="find") as system:
            kafka = system.settings.kafka
            report = {}
            for spec in specs:
                async with system.engine(spec.name).connect() as conn:
                    report[spec.name] = await inbox_status(conn, spec.database.inbox, spec.name)
                question = functools.partial(
                    consumer_lag, group_id=kafka.group_of(spec.name), topics=spec.consumes(kafka)
                )
                lag, error = await ask_broker(system[spec.name], question)
                report[spec.name]["lag"], report[spec.name]["broker_error"] = lag, error
            return report

    finish(execute(body), as_json, _print)


def _print(report: dict[str, Any]) -> None:
    print_table(
        "Inbox",
        ["service", "processed", "quarantined", "lag"],
        [
            (name, r["processed"], r["quarantined"], sum(r["lag"].values()) if r["lag"] is not None else "unknown")
            for name, r in report.items()
        ],
    )
    for name, r in report.items():
        if r["broker_error"]:
            console.print(f"  {name}: lag unknown: {r['broker_error']}", markup=False)
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


@app.command("retry")
def retry(
    service: Annotated[str, typer.Argument(help="payments or orders")],
    event_id: Annotated[
        list[uuid.UUID] | None,
        typer.Option("--event-id", help="Only these events (repeatable).", parser=uuid_argument),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Apply quarantined messages again (e.g. after fixing the cause); exit 1 if some still fail.

    Example: hsepay inbox retry payments --event-id 6f1c4a52-5a43-4d8e-9a64-1b9f4f0a7d21
    """
    if service == "all":
        raise typer.BadParameter("name one service", param_hint="SERVICE")
    (spec,) = services(service)

    async def body() -> tuple[int, int]:
        from hsepay.relay.quarantine import retry_quarantined

        async with built((spec,)) as system:
            return await retry_quarantined(
                system.engine(spec.name),
                spec.database.inbox,
                consumer=spec.name,
                handlers=spec.handlers(system.settings),
                event_ids=event_id,
            )

    done, failed = execute(body)
    if as_json:
        print_json({"processed": done, "still_quarantined": failed})
    else:
        console.print(f"{done} applied, {failed} still quarantined")
    if failed:
        raise typer.Exit(EXIT_DOMAIN)
