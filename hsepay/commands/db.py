"""`hsepay db`: schema migrations."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError

from hsepay import migrate
from hsepay.bootstrap import describe_db_error
from hsepay.commands.common import JsonOption, console, execute, print_json, runtime, services
from hsepay.config import ConfigError

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
    rt = runtime(specs)

    async def body() -> dict[str, str | None]:
        try:
            for spec in specs:
                await rt.check_database(spec.name)
            await rt.check_distinct_databases()
            results = {}
            for spec in specs:
                try:
                    await rt.migrate(spec.name)
                except DBAPIError as exc:
                    raise ConfigError(describe_db_error(rt.variable(spec.name), rt.db_urls[spec.name], exc)) from None
                async with rt.engine(spec.name).connect() as conn:
                    results[spec.name] = await conn.run_sync(migrate.revision_of, spec.name)
            return results
        finally:
            await rt.dispose()

    results = execute(body)
    if as_json:
        print_json(results)
    else:
        for name, revision in results.items():
            console.print(f"{name}: schema at revision [bold]{revision}[/]")
