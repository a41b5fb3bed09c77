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
    WideOption,
    built,
    console,
    execute,
    print_json,
    print_table,
    services,
)
from hsepay.commands.idprefix import IdRef, id_argument
from hsepay.commands.status_common import ask_broker, finish
from hsepay.errors import NotFound


class EventNotFound(NotFound):
    """No inbox row of this consumer has the event id given."""


app = typer.Typer(
    no_args_is_help=True,
    help="Inbox: processed and quarantined messages, consumer lag. Example: hsepay inbox status payments",
)


@app.command("status")
def status(service: ServiceArg = "all", wide: WideOption = False, as_json: JsonOption = False) -> None:
    """Processed and quarantined messages, recent quarantined errors, and consumer lag.

    Event ids are short (--wide or --json: whole); `hsepay inbox retry` takes either.
    Exit 2 if the broker cannot be asked for the lag.

    Example: hsepay inbox status payments
    """
    specs = services(service)
    shown: dict[uuid.UUID, str] = {}

    async def body() -> dict[str, Any]:
        from hsepay.commands.idprefix import shorten
        from hsepay.relay.broker import consumer_lag
        from hsepay.relay.quarantine import inbox_status

        async with built(specs, broker="find") as system:
            kafka = system.settings.kafka
            report = {}
            for spec in specs:
                async with system.engine(spec.name).connect() as conn:
                    report[spec.name] = await inbox_status(conn, spec.database.inbox, spec.name)
                    if not wide and not as_json:
                        inbox = spec.database.inbox
                        recent = [uuid.UUID(str(q["event_id"])) for q in report[spec.name]["quarantined_recent"]]
                        shown.update(await shorten(conn, inbox.c.event_id, recent, where=inbox.c.consumer == spec.name))
                question = functools.partial(
                    consumer_lag, group_id=kafka.group_of(spec.name), topics=spec.consumes(kafka)
                )
                lag, error = await ask_broker(system[spec.name], question)
                report[spec.name]["lag"], report[spec.name]["broker_error"] = lag, error
            return report

    finish(execute(body), as_json, functools.partial(_print, shown=shown, wide=wide))


def _print(report: dict[str, Any], shown: dict[uuid.UUID, str], wide: bool) -> None:
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
                        shown.get(uuid.UUID(str(q["event_id"])), q["event_id"]),
                        q["event_type"],
                        f"{q['topic']}[{q['partition']}]@{q['offset']}",
                        q["attempts"],
                        q["error"],
                    )
                    for q in r["quarantined_recent"]
                ],
                natural=wide,
            )


@app.command("retry")
def retry(
    service: Annotated[str, typer.Argument(help="payments or orders")],
    event_id: Annotated[
        list[IdRef] | None,
        typer.Option(
            "--event-id", help="Only these events: ids, or unique starts of them (repeatable).", parser=id_argument
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Apply quarantined messages again (e.g. after fixing the cause); exit 1 if some still fail.

    Example: hsepay inbox retry payments --event-id 6f1c4a52
    """
    (spec,) = services(service, every=False)

    async def body() -> tuple[int, int]:
        from hsepay.bootstrap.event_secrets import verifier_of
        from hsepay.commands.idprefix import resolve
        from hsepay.relay.quarantine import retry_quarantined

        async with built((spec,)) as system:
            engine = system.engine(spec.name)
            inbox = spec.database.inbox
            ids = None
            if event_id is not None:
                async with engine.connect() as conn:
                    ids = [
                        await resolve(
                            conn,
                            inbox.c.event_id,
                            ref,
                            what="event",
                            not_found=EventNotFound,
                            where=inbox.c.consumer == spec.name,
                        )
                        for ref in event_id
                    ]
            return await retry_quarantined(
                engine,
                inbox,
                consumer=spec.name,
                handlers=spec.handlers(system.settings),
                event_ids=ids,
                verifier=verifier_of(system.settings, spec),
            )

    done, failed = execute(body)
    if as_json:
        print_json({"processed": done, "still_quarantined": failed})
    else:
        console.print(f"{done} applied, {failed} still quarantined")
    if failed:
        raise typer.Exit(EXIT_DOMAIN)
