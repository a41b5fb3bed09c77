"""`hsepay order`: place orders and look at them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Literal

import typer

from hsepay.commands.common import (
    EXIT_DOMAIN,
    JsonOption,
    execute,
    fail,
    print_json,
    print_table,
    service_engine,
    uuid_argument,
)
from hsepay.config import get_settings
from hsepay.money import MAX_AMOUNT
from hsepay.orders.model import CREATED, MAX_DESCRIPTION, Order

app = typer.Typer(
    no_args_is_help=True,
    help="Orders: each asks the payments service to debit its amount once. Example: hsepay order list --status failed",
)

Status = Literal["created", "success", "failed"]


def _show(order: Order, as_json: bool) -> None:
    if as_json:
        print_json(order)
        return
    print_table(
        f"Order {order.id}",
        ["field", "value"],
        [
            ("user_id", order.user_id),
            ("amount", order.amount),
            ("description", order.description),
            ("status", order.status),
            ("reason", order.reason),
            ("created_at", order.created_at.isoformat()),
            ("updated_at", order.updated_at.isoformat()),
        ],
    )


@app.command()
def create(
    user_id: Annotated[
        uuid.UUID, typer.Argument(help="The paying user's UUID.", show_default=False, parser=uuid_argument)
    ],
    amount: Annotated[int, typer.Argument(min=1, max=MAX_AMOUNT, help="Minor units, 1..10^12.", show_default=False)],
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

        async with service_engine("orders") as engine:
            async with engine.begin() as conn:
                order = await operations.create_order(
                    conn, user_id=user_id, amount=amount, description=description, topic=topic
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
def show(
    order_id: Annotated[uuid.UUID, typer.Argument(help="The order's UUID.", show_default=False, parser=uuid_argument)],
    as_json: JsonOption = False,
) -> None:
    """Show one order (exit 1 if unknown).

    Example: hsepay order show 0b7e7c7e-2a1e-4d5e-9a4e-6c1f0f0c1a2b --json
    """

    async def body() -> Order:
        from hsepay.orders import operations

        async with service_engine("orders") as engine, engine.connect() as conn:
            return await operations.get_order(conn, order_id)

    _show(execute(body), as_json)


@app.command("list")
def list_(
    user: Annotated[
        uuid.UUID | None, typer.Option("--user", help="Only this user's orders.", parser=uuid_argument)
    ] = None,
    status: Annotated[Status | None, typer.Option(help="Only orders in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many orders.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List orders, newest first.

    Example: hsepay order list --user 3fa85f64-5717-4562-b3fc-2c963f66afa6 --status failed
    """

    async def body() -> list[Order]:
        from hsepay.orders import operations

        async with service_engine("orders") as engine, engine.connect() as conn:
            page, _ = await operations.list_orders(conn, user_id=user, status=status, limit=limit)
            return page

    orders = execute(body)
    if as_json:
        print_json(orders)
        return
    print_table(
        "Orders",
        ["id", "user_id", "amount", "description", "status", "reason", "created_at"],
        [
            (o.id, o.user_id, o.amount, o.description, o.status, o.reason, o.created_at.isoformat(timespec="seconds"))
            for o in orders
        ],
    )
