"""Payments domain records and the pure decision rule (no I/O: unit-tested on its own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

import msgspec

from hsepay.events import OrderCreated

__all__ = [
    "Account",
    "PaymentDecision",
    "PaymentRequest",
    "decide",
]

SUCCEEDED = "succeeded"
FAILED = "failed"
INSUFFICIENT_FUNDS = "insufficient_funds"
ACCOUNT_NOT_FOUND = "account_not_found"


class Account(msgspec.Struct, frozen=True, kw_only=True):
    user_id: uuid.UUID
    balance: int
    created_at: datetime
    updated_at: datetime


PaymentRequest = OrderCreated
"""What the payments side decides on: an order's `order.created` as it arrived (hsepay.events)."""


class PaymentDecision(msgspec.Struct, frozen=True, kw_only=True):
    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    status: Literal["succeeded", "failed"]
    reason: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED


def decide(
    requests: Iterable[PaymentRequest],
    balances: Mapping[uuid.UUID, int],
    earlier: Mapping[uuid.UUID, PaymentDecision],
) -> tuple[list[PaymentDecision], list[PaymentDecision]]:
    """Decide a batch in arrival order.

    Returns (answers, new): one answer per request, and the decisions taken now (to be recorded
    and, when succeeded, debited). An order decided before, in an earlier batch or earlier in this
    one, gets that same answer again and nothing new.
    """
    remaining = dict(balances)
    known = dict(earlier)
    answers: list[PaymentDecision] = []
    new: list[PaymentDecision] = []
    for request in requests:
        decision = known.get(request.order_id)
        if decision is None:
            balance = remaining.get(request.user_id)
            if balance is None:
                status, reason = FAILED, ACCOUNT_NOT_FOUND
            elif balance < request.amount:
                status, reason = FAILED, INSUFFICIENT_FUNDS
            else:
                remaining[request.user_id] = balance - request.amount
                status, reason = SUCCEEDED, None
            decision = PaymentDecision(
                order_id=request.order_id,
                user_id=request.user_id,
                amount=request.amount,
                status=status,
                reason=reason,
            )
            known[request.order_id] = decision
            new.append(decision)
        answers.append(decision)
    return answers, new
