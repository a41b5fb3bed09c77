"""`hsepay outbox status`: backlogs, the active relay, and the health of the topics relayed to."""

from __future__ import annotations

import functools
from typing import Any

import typer

from hsepay.commands.common import (
    JsonOption,
    ServiceArg,
    built,
    console,
    execute,
    print_table,
    services,
)
from hsepay.commands.status_common import ask_broker, finish

app = typer.Typer(
    no_args_is_help=True, help="Outbox backlogs and the active relay. Example: hsepay outbox status --json"
)


@app.command("status")
def status(service: ServiceArg = "all", as_json: JsonOption = False) -> None:
    """Pending rows, age of the oldest, per topic, the active relay, and topic replication problems.

    Exit 2 if the broker cannot be asked about the topics.

    Example: hsepay outbox status orders --json
    """
    specs = services(service)

    async def body() -> dict[str, Any]:
        from hsepay.relay.backlog import outbox_status
        from hsepay.relay.broker import topic_health

        async with built(specs, broker="find") as system:
            report = {}
            for spec in specs:
                async with system.engine(spec.name).connect() as conn:
                    report[spec.name] = await outbox_status(conn, spec.database.outbox)
                question = functools.partial(topic_health, topics=spec.produces(system.settings.kafka))
                health, error = await ask_broker(system[spec.name], question)
                report[spec.name]["topic_health"], report[spec.name]["broker_error"] = health, error
            return report

    finish(execute(body), as_json, _print)


def _print(report: dict[str, Any]) -> None:
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
            console.print(f"  {name} → {topic}: {t['pending']} pending, oldest {t['oldest_age_s']}s", markup=False)
        if r["broker_error"]:
            console.print(f"  {name}: topics not checked: {r['broker_error']}", markup=False)
        for topic, health in (r["topic_health"] or {}).items():
            for problem in health["problems"]:
                console.print(f"  [yellow]![/] {name} → {topic}: {problem}")
