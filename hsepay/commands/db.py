"""`hsepay db`: schema migrations."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError

from hsepay import migrate
from hsepay.bootstrap import describe_db_error
from hsepay.commands.common import EXIT_USAGE, JsonOption, console, fail, print_json, runtime, services_arg
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
    services = services_arg(service)
    rt = runtime(services)
    results = {}
    for name in services:
        try:
            asyncio.run(rt.check_database(name))
        except ConfigError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        try:
            migrate.upgrade(name, rt.db_urls[name])
        except DBAPIError as exc:
            raise fail(describe_db_error(name, rt.db_urls[name], exc), EXIT_USAGE) from None
        results[name] = migrate.current_revision(rt.db_urls[name])
    if as_json:
        print_json(results)
    else:
        for name, revision in results.items():
            console.print(f"{name}: schema at revision [bold]{revision}[/]")
