"""`hsepay account`: open accounts, deposit, read balances."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer

from hsepay.commands.common import (
    JsonOption,
    console,
    execute,
    print_json,
    print_table,
    service_engine,
    uuid_argument,
)
from hsepay.money import MAX_AMOUNT

app = typer.Typer(
    no_args_is_help=True,
    help="Payment accounts: one per user, balances in minor units. Example: hsepay account balance <user-uuid>",
)

UserId = Annotated[uuid.UUID, typer.Argument(help="The user's UUID.", show_default=False, parser=uuid_argument)]
Amount = Annotated[int, typer.Argument(min=1, max=MAX_AMOUNT, help="Minor units, 1..10^12.", show_default=False)]


@app.command()
def create(user_id: UserId, as_json: JsonOption = False) -> None:
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


@app.command()
def deposit(user_id: UserId, amount: Amount, as_json: JsonOption = False) -> None:
    """Add money to a user's account (exit 1 if there is no account).

    Example: hsepay account deposit 3fa85f64-5717-4562-b3fc-2c963f66afa6 1000
    """

    async def body():
        from hsepay.payments import operations

        async with service_engine("payments") as engine, engine.begin() as conn:
            return await operations.deposit(conn, user_id, amount)

    account = execute(body)
    if as_json:
        print_json({"message": "Balance refilled", "user_id": account.user_id, "balance": account.balance})
    else:
        console.print(f"Balance refilled: {account.user_id} now has {account.balance}")


@app.command()
def balance(user_id: UserId, as_json: JsonOption = False) -> None:
    """Show a user's balance (exit 1 if there is no account).

    Example: hsepay account balance 3fa85f64-5717-4562-b3fc-2c963f66afa6 --json
    """

    async def body():
        from hsepay.payments import operations

        async with service_engine("payments") as engine, engine.connect() as conn:
            return await operations.get_account(conn, user_id)

    account = execute(body)
    if as_json:
        print_json({"user_id": account.user_id, "balance": account.balance})
    else:
        console.print(f"{account.user_id}: balance {account.balance}")


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many accounts.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List accounts, oldest first.

    Example: hsepay account list --limit 20
    """

    async def body():
        from hsepay.payments import operations

        async with service_engine("payments") as engine, engine.connect() as conn:
            return await operations.list_accounts(conn, limit=limit)

    accounts = execute(body)
    if as_json:
        print_json(accounts)
    else:
        print_table(
            "Accounts",
            ["user_id", "balance", "created_at"],
            [(a.user_id, a.balance, a.created_at.isoformat(timespec="seconds")) for a in accounts],
        )
