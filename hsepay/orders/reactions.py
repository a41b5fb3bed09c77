"""Orders' reaction to payment results: settle the order once; late or duplicate results change nothing."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.orders import operations
from hsepay.orders.events import PAYMENT_FAILED, PAYMENT_SUCCEEDED
from hsepay.orders.model import PaymentResult
from hsepay.relay.inbound import Consumed, EventHandler, HandlerMap


async def _settle(conn: AsyncConnection, events: Sequence[Consumed[PaymentResult]]) -> None:
    await operations.apply_payment_results(conn, [(e.event_type == PAYMENT_SUCCEEDED, e.data) for e in events])


def make_handlers() -> HandlerMap:
    handler = EventHandler(schema=PaymentResult, apply=_settle)
    return {PAYMENT_SUCCEEDED: handler, PAYMENT_FAILED: handler}
