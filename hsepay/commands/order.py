"""`hsepay order`: place orders and look at them."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from typing import Annotated, Literal

import typer

from hsepay.commands.common import (
    EXIT_DOMAIN,
    NEGATIVE_NUMBERS,
    JsonOption,
    WideOption,
    amount_argument,
    execute,
    fail,
    print_json,
    print_table,
    service_engine,
)
from hsepay.commands.idprefix import IdRef, id_argument
from hsepay.commands.layout import Column
from hsepay.config import get_settings
from hsepay.orders.model import CREATED, MAX_DESCRIPTION, Order

app = typer.Typer(
    no_args_is_help=True,
    help="Orders: each asks the payments service to debit its amount once. Example: hsepay order list --status failed",
)

Status = Literal["created", "success", "failed"]


OrderIdArg = Annotated[
    IdRef,
    typer.Argument(
        help="The order's id, or any unique start of it (at least 4 hex digits).",
        show_default=False,
        parser=id_argument,
        metavar="ORDER_ID",
    ),
]


def _show(order: Order, as_json: bool) -> None:
    if as_json:
        print_json(order)
        return
    print_table(
        f"Order {order.id}",
        [Column("field"), Column("value", wraps=True)],
        [
            ("id", order.id),
            ("user_id", order.user_id),
            ("amount", order.amount),
            ("description", order.description),
            ("status", order.status),
            ("reason", order.reason),
            ("created_at", order.created_at.isoformat()),
            ("updated_at", order.updated_at.isoformat()),
        ],
    )


@app.command(context_settings=NEGATIVE_NUMBERS)
def create(
    user_id: Annotated[
        IdRef,
        typer.Argument(
            help="The paying user's id; a start of it is looked up among the accounts.",
            show_default=False,
            parser=id_argument,
            metavar="USER_ID",
        ),
    ],
    amount: Annotated[
        int,
        typer.Argument(help="Minor units, 1..10^12.", show_default=False, parser=amount_argument, metavar="AMOUNT"),
    ],
    description: Annotated[str, typer.Option(help=f"Free text, at most {MAX_DESCRIPTION} characters.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the final status and print it.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds --wait waits before giving up.")] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Place an order; with --wait, exit 0 on success and 1 on failure or timeout.

    Example: hsepay order create 3fa85f64-5717-4562-b3fc-2c963f66afa6 250 --description "coffee" --wait
    """
    if len(description) > MAX_DESCRIPTION or "\x00" in description:
        raise typer.BadParameter(f"at most {MAX_DESCRIPTION} characters, no NUL", param_hint="--description")
    topic = get_settings().kafka.orders_topic

    async def body() -> Order:
        from hsepay.orders import operations

        user = user_id.full
        if user is None:  # a start of an id: the user is found among the accounts (an order is paid from one)
            from hsepay.commands.idprefix import resolve
            from hsepay.payments.errors import AccountNotFound
            from hsepay.payments.tables import accounts

            async with service_engine("payments") as payments, payments.connect() as conn:
                user = await resolve(conn, accounts.c.user_id, user_id, what="account", not_found=AccountNotFound)
        async with service_engine("orders") as engine:
            async with engine.begin() as conn:
                order = await operations.create_order(
                    conn, user_id=user, amount=amount, description=description, topic=topic
                )
            if not wait:
                return order
            deadline = time.monotonic() + timeout
            delay = 0.005
            while order.status == CREATED and time.monotonic() < deadline:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
                async with engine.connect() as conn:
                    order = await operations.get_order(conn, order.id)
            return order

    order = execute(body)
    _show(order, as_json)
    if wait and order.status != "success":
        if order.status == CREATED:
            raise fail(
                f"order {order.id} still created after {timeout:g}s (are relays and consumers running?)", EXIT_DOMAIN
            )
        raise typer.Exit(EXIT_DOMAIN)


@app.command()
def show(order_id: OrderIdArg, as_json: JsonOption = False) -> None:
    """Show one order (exit 1 if unknown; exit 2 if the start of an id given names several).

    Example: hsepay order show 0b7e7c7e --json
    """

    async def body() -> Order:
        from hsepay.commands.idprefix import resolve
        from hsepay.orders import operations
        from hsepay.orders.errors import OrderNotFound
        from hsepay.orders.tables import orders as orders_table

        async with service_engine("orders") as engine, engine.connect() as conn:
            found = await resolve(conn, orders_table.c.id, order_id, what="order", not_found=OrderNotFound)
            return await operations.get_order(conn, found)

    _show(execute(body), as_json)


ORDER_COLUMNS = (
    Column("id"),
    Column("user"),
    Column("amount", justify="right"),
    Column("status", wraps=True, width=len("insufficient_funds")),  # "failed:" above its reason
    Column("created (UTC)"),
    Column("description", wraps=True),
)


@app.command("list")
def list_(
    user: Annotated[
        IdRef | None,
        typer.Option("--user", help="Only this user's orders (the id, or a unique start of it).", parser=id_argument),
    ] = None,
    status: Annotated[Status | None, typer.Option(help="Only orders in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many orders.")] = 50,
    wide: WideOption = False,
    as_json: JsonOption = False,
) -> None:
    """List orders, newest first, with short ids (--wide or --json: whole ones).

    Example: hsepay order list --user 3fa85f64 --status failed
    """

    async def body() -> tuple[list[Order], dict]:
        from hsepay.commands.idprefix import resolve, shorten
        from hsepay.orders import operations
        from hsepay.orders.errors import OrderNotFound
        from hsepay.orders.tables import orders as orders_table

        async with service_engine("orders") as engine, engine.connect() as conn:
            user_id = None
            if user is not None:
                user_id = await resolve(conn, orders_table.c.user_id, user, what="user", not_found=OrderNotFound)
            page, _ = await operations.list_orders(conn, user_id=user_id, status=status, limit=limit)
            if as_json or wide:
                return page, {}
            short = await shorten(conn, orders_table.c.id, [o.id for o in page])
            short |= await shorten(conn, orders_table.c.user_id, {o.user_id for o in page})
            return page, short

    orders, short = execute(body)
    if as_json:
        print_json(orders)
        return
    print_table(
        "Orders",
        ORDER_COLUMNS,
        [
            (
                short.get(o.id, o.id),
                short.get(o.user_id, o.user_id),
                o.amount,
                f"{o.status}: {o.reason}" if o.reason else o.status,
                o.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
                o.description,
            )
            for o in orders
        ],
        natural=wide,
    )
