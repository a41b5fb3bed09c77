"""Orders domain records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from hsepay.events import PaymentFailed, PaymentSucceeded

__all__ = ["CURSOR_PATTERN", "Order", "OrderStatus", "PaymentResult"]

MAX_DESCRIPTION = 1000
CURSOR_PATTERN = r"^[0-9]{1,17}\.[0-9a-f]{32}$"
"""A listing position: microseconds since 1970 (up to the year 5138) and an order id in hex."""

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


PaymentResult = PaymentSucceeded | PaymentFailed
"""What settles an order: the payments side's answer as it arrived (hsepay.events)."""
