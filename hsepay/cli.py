"""The `hsepay` command: every operator task, one Typer app with a sub-app per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from hsepay.commands import account, bench, db, inbox, order, outbox, token
from hsepay.commands.audit import audit
from hsepay.commands.chaos import chaos
from hsepay.commands.engines import broker, stop
from hsepay.commands.serve import serve
from hsepay.commands.status import status
from hsepay.commands.up import up
from hsepay.commands.usage import OneLineErrors
from hsepay.commands.workers import consume, relay

app = typer.Typer(
    name="hsepay",
    cls=OneLineErrors,  # usage errors: one line on stderr, exit 2
    no_args_is_help=True,
    help="Payments and orders that agree on money through Kafka. Try: hsepay up",
    pretty_exceptions_show_locals=False,
)
app.command()(up)
app.command()(serve)
app.command()(relay)
app.command()(consume)
app.command()(broker)
app.command()(stop)
app.command()(audit)
app.add_typer(bench.app, name="bench")
app.command()(chaos)
app.add_typer(db.app, name="db")
app.add_typer(account.app, name="account")
app.add_typer(order.app, name="order")
app.add_typer(outbox.app, name="outbox")
app.add_typer(inbox.app, name="inbox")
app.add_typer(token.app, name="token")
app.command()(status)


@app.callback()
def options(
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help="debug, info, warning or error (default: HSEPAY_LOG_LEVEL). Example: hsepay --log-level debug up",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Payments and orders that agree on money through Kafka. Try: hsepay up"""
    if log_level is not None:
        from hsepay.observability import logs

        if log_level.lower() not in logs.LEVELS:
            raise typer.BadParameter(f"{log_level!r} is not one of {', '.join(logs.LEVELS)}", param_hint="--log-level")
        logs.set_level(log_level.lower())


def main() -> None:
    from hsepay.observability import logs, tracing

    observability = logs.settings_or_defaults()
    logs.configure(observability.log_level, observability.log_format)
    tracing.enable_from(observability)
    app()


if __name__ == "__main__":
    main()
