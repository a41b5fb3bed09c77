"""What the status commands share: how a report ends (JSON or a table, exit 2 if the broker failed to answer)."""

from __future__ import annotations

from collections.abc import Callable

import typer

from hsepay.commands.asking import NO_BROKER, ask_broker
from hsepay.commands.common import EXIT_USAGE, print_json

__all__ = ["NO_BROKER", "ask_broker", "finish"]


def finish(report: dict[str, dict], as_json: bool, show: Callable[[dict[str, dict]], None]) -> None:
    """Print a status report; exit 2 when a broker that should answer did not (the report says why)."""
    if as_json:
        print_json(report)
    else:
        show(report)
    if any(r["broker_error"] not in (None, NO_BROKER) for r in report.values()):
        raise typer.Exit(EXIT_USAGE)
