"""`hsepay db`: schema migrations."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError

from hsepay import migrate
from hsepay.bootstrap import describe_db_error
from hsepay.commands.common import EXIT_USAGE, JsonOption, console, fail, print_json, runtime, services
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
    results = {}
    for spec in specs:
        try:
            asyncio.run(rt.check_database(spec.name))
        except ConfigError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        url = rt.db_urls[spec.name]
        try:
            migrate.upgrade(spec.name, url)
        except DBAPIError as exc:
            raise fail(describe_db_error(rt.variable(spec.name), url, exc), EXIT_USAGE) from None
        results[spec.name] = migrate.current_revision(url)
    if as_json:
        print_json(results)
    else:
        for name, revision in results.items():
            console.print(f"{name}: schema at revision [bold]{revision}[/]")
