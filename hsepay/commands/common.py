"""What every command shares: options, output, and the one place that maps errors to exit codes.

Cheap to import, like every module of hsepay/commands: `hsepay --help` loads them all, so what a
command needs to run (SQLAlchemy, aiokafka, msgspec, the domain) is imported by the command's body.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hsepay import registry
from hsepay.commands.layout import Column, natural_width, table
from hsepay.config import ConfigError, Settings, get_settings
from hsepay.errors import DomainError
from hsepay.registry import ServiceSpec

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from hsepay.system import System

T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
WideOption = Annotated[
    bool, typer.Option("--wide", help="Whole ids instead of short ones (commands take either, or any unique start).")
]
ServiceArg = Annotated[str, typer.Argument(help="payments, orders or all")]

console = Console()
err_console = Console(stderr=True)

EXIT_DOMAIN = 1
EXIT_USAGE = 2


def fail(message: str, code: int) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(printable(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def execute(body: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; config problems and lost infrastructure exit 2, domain refusals
    exit 1, each with one line on stderr and never a traceback."""
    try:
        return asyncio.run(body())
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except DomainError as exc:
        raise fail(str(exc), EXIT_DOMAIN) from None
    except Exception as exc:
        from hsepay.resilience import describe, is_broker_fault, is_unavailable

        if is_broker_fault(exc):
            raise fail(f"broker unavailable: {describe(exc)}", EXIT_USAGE) from None
        if is_unavailable(exc):
            raise fail(f"database unavailable: {describe(exc)}", EXIT_USAGE) from None
        raise


def services(
    choice: str, allowed: tuple[ServiceSpec, ...] | None = None, *, every: bool = True
) -> tuple[ServiceSpec, ...]:
    """The services a SERVICE argument names (`all` when `every`, or one); any other name is a usage error."""
    try:
        return registry.named(choice, allowed=allowed, every=every)
    except registry.UnknownService as exc:
        raise typer.BadParameter(str(exc), param_hint="SERVICE") from None


def uuid_argument(value: str) -> uuid.UUID:
    """Typer parser for ids: the same rule as the API (hsepay.ids)."""
    from hsepay.ids import parse_uuid

    parsed = parse_uuid(value)
    if parsed is None:
        raise typer.BadParameter(f"{value[:64]!r} is not a UUID")
    return parsed


AMOUNT_RULE = "amounts are whole minor units from 1 to 10^12"

# A command that takes an AMOUNT reads `-5` as a value rather than as an unknown option, so that our
# own parser refuses it in our words (click said "No such option: -5").
NEGATIVE_NUMBERS = {"ignore_unknown_options": True}


def amount_argument(value: str) -> int:
    """Typer parser for amounts (the API's rule: an integer in 1..10^12), refused in our own words."""
    from hsepay.money import MAX_AMOUNT

    text = value.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise typer.BadParameter(f"{printable(value[:32])!r} is not an amount: {AMOUNT_RULE}")
    amount = int(text)
    if not 1 <= amount <= MAX_AMOUNT:
        raise typer.BadParameter(f"{amount} is not an amount: {AMOUNT_RULE}")
    return amount


def settings() -> Settings:
    """The process's settings; a bad setting is exit code 2 with one line naming the variable."""
    try:
        return get_settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


@contextlib.asynccontextmanager
async def built(
    specs: Sequence[ServiceSpec] | None = None, *, settings: Settings | None = None, **parts: Any
) -> AsyncIterator[System]:
    """The system of the command's services (default: every service with a database), checked and
    ready (`hsepay.bootstrap.build`), its engines disposed of when the command ends."""
    from hsepay.bootstrap import built as build

    specs = registry.with_database() if specs is None else specs
    async with build(get_settings() if settings is None else settings, specs, **parts) as system:
        yield system


@contextlib.asynccontextmanager
async def service_engine(service: str) -> AsyncIterator[AsyncEngine]:
    """An engine on one service database, ready for use, disposed at the end of the command."""
    async with built((registry.get(service),)) as system:
        yield system.engine(service)


def printable(value: str) -> str:
    """Text from data made safe for a terminal: control characters (escape sequences) shown as \\xNN."""
    return "".join(ch if ch.isprintable() or ch in "\n" else f"\\x{ord(ch):02x}" for ch in value)


def cell(value: Any) -> str:
    """A table cell from data: printable and with Rich markup escaped, so data never styles output."""
    return "" if value is None else escape(printable(str(value)))


def print_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def print_table(
    title: str, columns: Sequence[str | Column], rows: Iterable[Sequence[Any]], *, natural: bool = False
) -> None:
    """A table of data cells; a column named by a plain string may wrap, a `Column` says whether it may.
    `natural`: as wide as the data, even past the terminal (whole ids with --wide are never cut)."""
    specs = [c if isinstance(c, Column) else Column(c, wraps=True) for c in columns]
    grid = table(escape(title), specs, [[cell(value) for value in row] for row in rows])
    width = natural_width(console, grid) if natural else 0
    out = (
        Console(file=console.file, width=width, color_system=console.color_system) if width > console.width else console
    )
    out.print(grid)
