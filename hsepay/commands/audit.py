"""`hsepay audit`: the money invariants of DESIGN §5 across both databases, and what each side knows
of the other's events against what the topics still hold."""

from __future__ import annotations

from typing import Annotated

import typer

from hsepay.commands.common import (
    EXIT_DOMAIN,
    JsonOption,
    built,
    cell,
    console,
    execute,
    print_json,
    print_table,
)


def audit(
    topics: Annotated[
        bool,
        typer.Option(
            "--topics/--no-topics",
            help="Also compare both databases with the topics (needs the broker): what a failover made both forget.",
        ),
    ] = True,
    max_events: Annotated[
        int, typer.Option(min=1, help="Latest messages read per topic partition at most (older ones are not compared).")
    ] = 1_000_000,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Recreate the orders the orders database lost whose payment request is on the topic; the "
            "re-drive then settles them (never a second debit: the debit is unique per order id).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check the money invariants across both databases, and both databases against the topics;
    exit 1 on any violation. Run it when the system is quiet (orders in flight are reported as such).

    Example: hsepay audit --json
    """
    from hsepay import audit as money_audit
    from hsepay.bootstrap.event_secrets import history_verifier
    from hsepay.orders.operations import restore_orders
    from hsepay.topic_audit import TopicWitness

    async def body() -> tuple[money_audit.AuditReport, list[str], int]:
        async with built(broker="connect" if topics else "none") as system:
            payments, orders = system.engine("payments"), system.engine("orders")
            witness = None
            if topics:
                kafka = system.settings.kafka
                witness = TopicWitness(
                    system["orders"].broker,
                    kafka.orders_topic,
                    kafka.payment_status_topic,
                    max_events,
                    verifier=history_verifier(system.settings),
                )
                await witness.mark()
            idle_allowed = witness.reading_allowance if witness is not None else None
            async with money_audit.snapshots(payments, orders, idle_allowed=idle_allowed) as (p, o):
                report = await money_audit.check_invariants(p, o)
                lost = []
                if witness is not None:
                    found = await witness.compare(p, o)
                    report.checks.extend(found.checks)
                    report.facts["topics"] = found.facts
                    lost = found.repairable
            notes: list[str] = []
            restored = 0
            if repair and lost:
                async with orders.begin() as conn:
                    restored = await restore_orders(
                        conn, [(x.order_id, x.user_id, x.amount, x.requested_at) for x in lost]
                    )
                notes.append(
                    f"restored {restored} order(s) from their payment requests; the orders consumer's re-drive "
                    "settles them (run `hsepay audit` again once it has)"
                )
            elif lost:
                notes.append(f"{len(lost)} lost order(s) can be restored from the topic: hsepay audit --repair")
            return report, notes, restored

    report, notes, restored = execute(body)
    if as_json:
        print_json({**report.to_json(), "repair": {"restored": restored, "notes": notes}})
    else:
        print_table(
            "Audit",
            ["check", "result", "what it means"],
            [(c.name, "ok" if c.ok else f"{c.count} violation(s)", c.description) for c in report.checks],
        )
        for check in report.checks:
            for example in check.violations:
                console.print(f"  [red]✗[/] {check.name}: {cell(example)}")
        console.print("  " + cell(", ".join(f"{k}={v}" for k, v in report.facts.items())))
        for note in notes:
            console.print(f"  {cell(note)}")
    if not report.ok:
        raise typer.Exit(EXIT_DOMAIN)
