"""Where an order's milliseconds go, hop by hop, from the timestamps the saga writes anyway.

For each timed order the latency scenario knows, on the machine's clock, when its POST was sent
and when the client saw it final; the databases know when the order was written (`created_at`),
when the broker acknowledged its payment request (the orders outbox row's `sent_at`), when the
payments consumer's transaction began (`payment_decisions.decided_at`), when the broker
acknowledged the payment result (the payments outbox row's `sent_at`) and when the orders
consumer's transaction began (`updated_at`). `now()` is the start of a transaction (or of the
mark-sent statement, which runs after the ack). With PostgreSQL on this machine, its clock is
the client's, so the six hops add up to what the client saw; with a remote server the first and
last hop carry the difference of the two clocks (the report says which).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import text

from hsepay.bench.stats import Histogram
from hsepay.system import System

__all__ = ["HOPS", "hop_histograms"]

HOPS = (
    ("POST sent → order written", "HTTP, the API, the group commit's turn (the statement's start)"),
    ("→ payment request acknowledged", "the order's commit, NOTIFY, the orders relay's read, produce, ack"),
    ("→ payments transaction begins", "the payments consumer's fetch and decode"),
    ("→ payment result acknowledged", "decision, debit and outbox, commit, NOTIFY, the payments relay, ack"),
    ("→ orders transaction begins", "the orders consumer's fetch and decode"),
    ("→ client sees final", "the settling commit, then the client's next poll"),
)

_ORDERS = text(
    "SELECT o.id, extract(epoch FROM o.created_at), extract(epoch FROM o.updated_at), extract(epoch FROM ob.sent_at) "
    "FROM orders o JOIN outbox ob ON ob.event_type = 'order.created' AND ob.headers->>'correlation_id' = o.id::text "
    "WHERE o.id = ANY(:ids)"
)
_PAYMENTS = text(
    "SELECT d.order_id, extract(epoch FROM d.decided_at), extract(epoch FROM ob.sent_at) "
    "FROM payment_decisions d JOIN outbox ob ON ob.headers->>'correlation_id' = d.order_id::text "
    "WHERE d.order_id = ANY(:ids)"
)


async def hop_histograms(system: System, timed: Mapping[uuid.UUID, tuple[float, float]]) -> tuple[list[Histogram], int]:
    """One histogram per hop of HOPS over the orders of `timed` (order id -> (POST sent, final
    seen), Unix times), and how many orders had every timestamp (a purged outbox row, a redelivery
    or a re-sent request leaves an order out)."""
    ids: Sequence[uuid.UUID] = list(timed)
    async with system.engine("orders").connect() as conn:
        orders = {row[0]: row[1:] for row in await conn.execute(_ORDERS, {"ids": ids})}
    async with system.engine("payments").connect() as conn:
        payments = {row[0]: row[1:] for row in await conn.execute(_PAYMENTS, {"ids": ids})}
    histograms = [Histogram() for _ in HOPS]
    complete = 0
    for order_id, (sent, seen) in timed.items():
        if order_id not in orders or order_id not in payments:
            continue
        created, settled, requested = orders[order_id]
        decided, answered = payments[order_id]
        stamps = [sent, created, requested, decided, answered, settled, seen]
        if any(stamp is None for stamp in stamps):
            continue
        complete += 1
        for histogram, start, end in zip(histograms, stamps, stamps[1:], strict=False):
            histogram.record(max(0.0, float(end) - float(start)))
    return histograms, complete
