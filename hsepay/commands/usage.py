"""Usage errors as the README promises them: one line on stderr, in our own words, exit 2.

Typer prints a usage error as a five-line Rich box, and since it converts values with pydantic, its
messages are pydantic's ("Input should be a valid integer, unable to parse string as an integer").
The root command's group catches every click error itself, rewrites a pydantic refusal from its
structured form (never by matching text), and prints `error: <what> (hsepay <command> --help)`.
Only click, typer and rich are imported here: this runs for every command, `--help` included.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

# Typer may vendor its own click (typer._click since 0.2x): take the exception classes from the module
# its BadParameter comes from, so that these are the ones it raises.
_click = sys.modules[typer.BadParameter.__module__]
ClickException, UsageError = _click.ClickException, _click.UsageError

__all__ = ["OneLineErrors", "plain_words"]


def _shown(value: Any) -> str:
    return repr(value[:64]) if isinstance(value, str) else repr(value)


def _one(error: dict[str, Any]) -> str:
    """One pydantic error (`ValidationError.errors()` item) in the words of this CLI."""
    kind, ctx, given = error.get("type", ""), error.get("ctx") or {}, error.get("input")
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"{_shown(given)} is not a whole number"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{_shown(given)} is not a number"
    if kind == "bool_parsing":
        return f"{_shown(given)} is neither true nor false"
    if kind == "value_error" and ctx.get("error") is not None:  # a validator's own ValueError: its words
        return str(ctx["error"]).rstrip(".")
    if kind in ("literal_error", "enum"):
        return f"{_shown(given)} is not one of {ctx.get('expected', 'the choices in --help')}"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {ctx.get(key)} (got {given})"
    message = str(error.get("msg", "invalid value"))
    return message[:1].lower() + message[1:]


def plain_words(exc: Any) -> str:
    """The error's message; a refusal by pydantic (typer's converter) told in our own words."""
    cause = exc.__cause__
    if isinstance(exc, typer.BadParameter) and callable(getattr(cause, "errors", None)):
        exc.message = "; ".join(_one(e) for e in cause.errors())  # type: ignore[union-attr]
    return exc.format_message()


def _line(exc: Any) -> str:
    message = " ".join(plain_words(exc).split()).rstrip(".")  # one line, whatever the message held
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, UsageError) and ctx is not None:
        return f"{message}; see {ctx.command_path} --help"
    return message


class OneLineErrors(TyperGroup):
    """The root group: click's and typer's usage errors become one line on stderr (exit 2)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            # Not standalone: click raises its errors to us instead of printing them, and returns the
            # code of a typer.Exit (commands themselves return None).
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help is the message, already printed
                sys.exit(exc.exit_code)
            from rich.console import Console
            from rich.markup import escape

            Console(stderr=True).print(f"[bold red]error:[/] {escape(_line(exc))}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)
