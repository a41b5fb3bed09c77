"""The saga latency histogram, fed where orders settle (the orders reaction calls the observer)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.orders.operations import Settled

__all__ = ["observe_settled_after_commit"]


def observe_settled_after_commit(conn: AsyncConnection, settled: Sequence[Settled]) -> None:
    """Observe each order's creation-to-final time once its transaction commits.

    A batch that rolls back (and is re-applied one message at a time) must not count its orders
    twice, so the observation waits for the commit of this connection's transaction.
    """
    from hsepay.observability.metrics import observe_settled

    values = [(order.status, order.seconds) for order in settled]
    event.listen(conn.sync_connection, "commit", lambda _conn: observe_settled(values), once=True)
