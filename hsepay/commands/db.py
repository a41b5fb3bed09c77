"""`hsepay db`: schema migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from hsepay.commands.common import JsonOption, built, console, execute, print_json, services

app = typer.Typer(
    no_args_is_help=True,
    help="Database schema (Alembic migrations, one history per service). Example: hsepay db upgrade all",
)


@app.command()
def upgrade(
    service: Annotated[str, typer.Argument(help="payments, orders or all")] = "all",
    as_json: JsonOption = False,
) -> None:
    """Migrate service databases to the newest schema; safe to run on a live database.

    Example: hsepay db upgrade all
    """
    specs = services(service)

    async def body() -> dict[str, str | None]:
        from hsepay import migrate

        results = {}
        async with built(specs, database="migrate") as system:
            for spec in specs:
                async with system.engine(spec.name).connect() as conn:
                    results[spec.name] = await conn.run_sync(migrate.revision_of, spec.name)
        return results

    results = execute(body)
    if as_json:
        print_json(results)
    else:
        for name, revision in results.items():
            console.print(f"{name}: schema at revision [bold]{revision}[/]")
