"""`hsepay account`: open accounts, deposit, read balances."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Annotated

import typer

from hsepay.commands.common import (
    NEGATIVE_NUMBERS,
    JsonOption,
    WideOption,
    amount_argument,
    console,
    execute,
    print_json,
    print_table,
    service_engine,
    uuid_argument,
)
from hsepay.commands.idprefix import IdRef, id_argument
from hsepay.commands.layout import Column

app = typer.Typer(
    no_args_is_help=True,
    help="Payment accounts: one per user, balances in minor units. Example: hsepay account balance <user-uuid>",
)

NewUserId = Annotated[
    uuid.UUID,
    typer.Argument(help="The user's id (whole).", show_default=False, parser=uuid_argument, metavar="USER_ID"),
]
UserId = Annotated[
    IdRef,
    typer.Argument(
        help="The user's id, or any unique start of it (at least 4 hex digits).",
        show_default=False,
        parser=id_argument,
        metavar="USER_ID",
    ),
]


async def _user(conn, ref: IdRef) -> uuid.UUID:
    from hsepay.commands.idprefix import resolve
    from hsepay.payments.errors import AccountNotFound
    from hsepay.payments.tables import accounts

    return await resolve(conn, accounts.c.user_id, ref, what="account", not_found=AccountNotFound)


Amount = Annotated[
    int, typer.Argument(help="Minor units, 1..10^12.", show_default=False, parser=amount_argument, metavar="AMOUNT")
]


@app.command()
def create(user_id: NewUserId, as_json: JsonOption = False) -> None:
    """Open a zero-balance account for a user (exit 1 if the user has one).

    Example: hsepay account create 3fa85f64-5717-4562-b3fc-2c963f66afa6
    """

    async def body():
        from hsepay.payments import operations

        async with service_engine("payments") as engine, engine.begin() as conn:
            return await operations.create_account(conn, user_id)

    account = execute(body)
    if as_json:
        print_json({"message": "Account created", "user_id": account.user_id, "balance": account.balance})
    else:
        console.print(f"Account created for {account.user_id}, balance {account.balance}")


@app.command(context_settings=NEGATIVE_NUMBERS)
def deposit(user_id: UserId, amount: Amount, as_json: JsonOption = False) -> None:
    """Add money to a user's account (exit 1 if there is no account).

    Example: hsepay account deposit 3fa85f64-5717-4562-b3fc-2c963f66afa6 1000
    """

    async def body():
        from hsepay.payments import operations

        async with service_engine("payments") as engine, engine.begin() as conn:
            return await operations.deposit(conn, await _user(conn, user_id), amount)

    account = execute(body)
    if as_json:
        print_json({"message": "Balance refilled", "user_id": account.user_id, "balance": account.balance})
    else:
        console.print(f"Balance refilled: {account.user_id} now has {account.balance}")


@app.command()
def balance(user_id: UserId, as_json: JsonOption = False) -> None:
    """Show a user's balance (exit 1 if there is no account).

    Example: hsepay account balance 3fa85f64 --json
    """

    async def body():
        from hsepay.payments import operations

        async with service_engine("payments") as engine, engine.connect() as conn:
            return await operations.get_account(conn, await _user(conn, user_id))

    account = execute(body)
    if as_json:
        print_json({"user_id": account.user_id, "balance": account.balance})
    else:
        console.print(f"{account.user_id}: balance {account.balance}")


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many accounts.")] = 100,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """List accounts, oldest first, with short user ids (--wide or --json: whole ones).

    Example: hsepay account list --limit 20
    """

    async def body():
        from hsepay.payments import operations

        async with service_engine("payments") as engine, engine.connect() as conn:
            from hsepay.commands.idprefix import shorten
            from hsepay.payments.tables import accounts

            found = await operations.list_accounts(conn, limit=limit)
            short = {} if wide or as_json else await shorten(conn, accounts.c.user_id, [a.user_id for a in found])
            return found, short

    listed, short = execute(body)
    if as_json:
        print_json(listed)
    else:
        print_table(
            "Accounts",
            [Column("user"), Column("balance", justify="right"), Column("created (UTC)")],
            [
                (short.get(a.user_id, a.user_id), a.balance, a.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"))
                for a in listed
            ],
            natural=wide,
        )
