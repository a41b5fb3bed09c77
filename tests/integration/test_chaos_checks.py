"""The checks `hsepay chaos` makes after its load, on a real PostgreSQL, at the size of a long soak."""

from __future__ import annotations

import uuid

from hsepay.chaos.run import _final_count, _missing
from hsepay.orders.tables import orders as orders_table


async def test_finality_and_presence_are_checked_for_more_ids_than_one_statement_can_carry(orders_engine):
    """A one-hour soak at 20 orders/s accepted 72,000 orders; asking about them in one IN list was
    72,000 bind parameters, past the protocol's 65,535 ("number of parameters must be between 0 and
    65535"), and the run could only say that none was final."""
    settled, waiting = uuid.uuid4(), uuid.uuid4()
    async with orders_engine.begin() as conn:
        await conn.execute(
            orders_table.insert(),
            [
                {"id": settled, "user_id": uuid.uuid4(), "amount": 5, "status": "success"},
                {"id": waiting, "user_id": uuid.uuid4(), "amount": 5, "status": "created"},
            ],
        )
    unknown = [uuid.uuid4() for _ in range(70_000)]
    ids = [settled, *unknown[:35_000], waiting, *unknown[35_000:]]

    final, pending = await _final_count(orders_engine, ids)
    assert final == 1 and len(pending) == len(ids) - 1 and settled not in pending and waiting in pending
    assert await _missing(orders_engine, ids) == unknown
