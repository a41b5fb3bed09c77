"""Orders' reaction to payment results: settle the order once; late or duplicate results change nothing,
and a result that does not match its order (user, amount) is refused."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.events import PaymentFailed, PaymentSucceeded
from hsepay.orders import operations
from hsepay.orders.model import PaymentResult
from hsepay.orders.operations import Settled
from hsepay.relay.inbound import Consumed, EventHandler, HandlerMap, Refused

log = logging.getLogger(__name__)

SettledObserver = Callable[[AsyncConnection, Sequence[Settled]], None]
"""Told, inside the transaction, which orders it settles (the composition root wires metrics here)."""


def make_handlers(on_settled: SettledObserver | None = None) -> HandlerMap:
    async def settle(conn: AsyncConnection, events: Sequence[Consumed[PaymentResult]]) -> list[Refused]:
        settlement = await operations.apply_payment_results(conn, [e.data for e in events])
        settled = settlement.settled
        if on_settled is not None and settled:
            on_settled(conn, settled)
        if log.isEnabledFor(logging.DEBUG):
            causes = {e.data.order_id: e for e in events}
            for order in settled:
                event = causes[order.order_id]
                extra = {"order_id": str(order.order_id), "event_id": str(event.event_id)}
                extra["correlation_id"] = event.headers.get("correlation_id", extra["order_id"])
                log.debug("order %s settled: %s after %.3fs", order.order_id, order.status, order.seconds, extra=extra)
        return [Refused(events[position].event_id, reason) for position, reason in settlement.mismatched.items()]

    # One `apply` for both: a batch that mixes the two settles in one statement (relay.inbox groups by it).
    return {
        PaymentSucceeded.TYPE: EventHandler(schema=PaymentSucceeded, apply=settle),
        PaymentFailed.TYPE: EventHandler(schema=PaymentFailed, apply=settle),
    }
