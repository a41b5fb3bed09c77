"""`hsepay audit`: the money invariants of DESIGN §5 across both databases."""

from __future__ import annotations

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


def audit(as_json: JsonOption = False) -> None:
    """Check the money invariants across both databases; exit 1 on any violation.

    Example: hsepay audit --json
    """

    from hsepay import audit as money_audit

    async def body() -> money_audit.AuditReport:
        async with built() as system:
            async with system.engine("payments").connect() as p, system.engine("orders").connect() as o:
                # One repeatable-read snapshot per database, so each side is read consistently.
                await p.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await o.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return await money_audit.check_invariants(p, o)

    report = execute(body)
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
                console.print(f"  [red]✗[/] {check.name}: {cell(example)}")
        console.print("  " + cell(", ".join(f"{k}={v}" for k, v in report.facts.items())))
    if not report.ok:
        raise typer.Exit(EXIT_DOMAIN)
