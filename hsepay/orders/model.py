"""Orders domain records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = ["Order", "OrderStatus", "PaymentResult"]

MAX_DESCRIPTION = 1000

OrderStatus = Literal["created", "success", "failed"]
CREATED, SUCCESS, FAILED = "created", "success", "failed"


class Order(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    description: str
    status: str
    reason: str | None
    created_at: datetime
    updated_at: datetime


class PaymentResult(msgspec.Struct, frozen=True, kw_only=True):
    """The `data` of payment.succeeded / payment.failed as the orders side reads it."""

    order_id: uuid.UUID
    reason: Annotated[str, msgspec.Meta(max_length=200)] | None = None
