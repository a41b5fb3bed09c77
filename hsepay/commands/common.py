"""What every command shares: the --json option, output, and one place that maps errors to exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.bootstrap import Runtime
from hsepay.config import ConfigError, get_settings
from hsepay.errors import DomainError
from hsepay.migrate import SERVICES

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]

console = Console()
err_console = Console(stderr=True)

EXIT_DOMAIN = 1
EXIT_USAGE = 2


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; config problems exit 2, domain refusals exit 1, both with one line.

    A database lost in the middle of a command is reported the same way as one unreachable at its
    start (exit 2, one line), never as a traceback.
    """
    try:
        return asyncio.run(coro_factory())
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except DomainError as exc:
        raise fail(str(exc), EXIT_DOMAIN) from None
    except (OperationalError, InterfaceError) as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise fail(f"database unavailable: {reason}", EXIT_USAGE) from None


def runtime(services: Sequence[str] = SERVICES) -> Runtime:
    """Resolve settings into a Runtime; a bad setting becomes exit code 2 with one line."""
    try:
        return Runtime.from_settings(get_settings(), tuple(services))
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


@contextlib.asynccontextmanager
async def open_runtime(services: Sequence[str] = SERVICES) -> AsyncIterator[Runtime]:
    """A Runtime for the command's services whose engines are disposed when the command ends."""
    rt = runtime(services)
    try:
        yield rt
    finally:
        await rt.dispose()


@contextlib.asynccontextmanager
async def service_engine(service: str) -> AsyncIterator[AsyncEngine]:
    """An engine on one service database, ready for use, disposed at the end of the command."""
    async with open_runtime((service,)) as rt:
        yield await rt.ready_engine(service)


def services_arg(value: str) -> tuple[str, ...]:
    if value == "all":
        return SERVICES
    if value in SERVICES:
        return (value,)
    raise typer.BadParameter(f"expected payments, orders or all, got {value!r}")


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)
