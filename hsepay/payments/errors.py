from __future__ import annotations

from hsepay.errors import Conflict, NotFound

__all__ = ["AccountExists", "AccountNotFound", "BalanceLimitExceeded", "DepositAlreadyRecorded"]


class AccountNotFound(NotFound):
    title = "Account not found"


class AccountExists(Conflict):
    title = "Account already exists"


class BalanceLimitExceeded(Conflict):
    title = "Balance limit exceeded"


class DepositAlreadyRecorded(Conflict):
    """A deposit reference (its Idempotency-Key) that the ledger already holds, e.g. reused after the
    key's record expired: the deposit happened once and is not repeated."""

    title = "Deposit already recorded"
