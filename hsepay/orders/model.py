"""Orders domain records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from hsepay.events import PaymentFailed, PaymentSucceeded

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


PaymentResult = PaymentSucceeded | PaymentFailed
"""What settles an order: the payments side's answer as it arrived (hsepay.events)."""
