"""The response bodies of the REST contract (DESIGN §3), field by field, as OpenAPI shows them.

Both APIs answer with these, and the gateway documents its forwarded routes with them; they import
nothing of hsepay, so the gateway may use them without reaching into the domains.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = ["AccountCreated", "Balance", "BalanceRefilled", "OrderAccepted", "OrderView"]

Money = Annotated[int, msgspec.Meta(ge=0, description="minor units (cents)")]
Amount = Annotated[int, msgspec.Meta(ge=1, le=10**12, description="minor units, 1..10^12")]
UserId = Annotated[uuid.UUID, msgspec.Meta(description="the user, as given when the account was opened")]
OrderId = Annotated[uuid.UUID, msgspec.Meta(description="the order, chosen by the orders service")]
Status = Annotated[
    Literal["created", "success", "failed"],
    msgspec.Meta(description="created until the payments service answers; then success or failed, once"),
]
Reason = Annotated[
    Literal["insufficient_funds", "account_not_found"] | None,
    msgspec.Meta(description="why a failed order failed; null unless status is failed"),
]


class AccountCreated(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(examples=["Account created"])]
    user_id: UserId
    balance: Annotated[Money, msgspec.Meta(description="0 for a new account")]
    created_at: datetime


class BalanceRefilled(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(examples=["Balance refilled"])]
    user_id: UserId
    balance: Annotated[Money, msgspec.Meta(description="the balance after this deposit")]


class Balance(msgspec.Struct):
    user_id: UserId
    balance: Money


class OrderAccepted(msgspec.Struct):
    message: Annotated[str, msgspec.Meta(examples=["Order accepted"])]
    id: OrderId
    status: Annotated[Literal["created"], msgspec.Meta(description="always created: payment follows")]
    user_id: UserId
    amount: Amount
    description: str
    created_at: datetime


class OrderView(msgspec.Struct):
    """An order as GET /order/{id}, GET /orders/{id} and each item of GET /orders show it."""

    id: OrderId
    user_id: UserId
    amount: Amount
    description: Annotated[str, msgspec.Meta(max_length=1000)]
    status: Status
    reason: Reason
    created_at: datetime
    updated_at: Annotated[datetime, msgspec.Meta(description="when the status last changed")]
