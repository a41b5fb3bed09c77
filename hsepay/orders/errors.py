from __future__ import annotations

from hsepay.errors import InvalidRequest, NotFound

__all__ = ["InvalidCursor", "OrderNotFound"]


class OrderNotFound(NotFound):
    title = "Order not found"


class InvalidCursor(InvalidRequest):
    title = "Invalid cursor"
