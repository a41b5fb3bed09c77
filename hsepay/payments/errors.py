from __future__ import annotations

from hsepay.errors import Conflict, NotFound

__all__ = ["AccountExists", "AccountNotFound", "BalanceLimitExceeded"]


class AccountNotFound(NotFound):
    title = "Account not found"


class AccountExists(Conflict):
    title = "Account already exists"


class BalanceLimitExceeded(Conflict):
    title = "Balance limit exceeded"
