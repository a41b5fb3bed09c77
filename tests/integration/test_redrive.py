"""The re-drive re-sends what may have been lost, and paces itself when re-sending does not help
(issue 22: 47,733 extra payment requests during one 5-minute stall)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text, update

from hsepay.orders import operations as orders_ops
from hsepay.orders.redrive import Redrive
from hsepay.orders.tables import orders, outbox
from tests.support import place_order

TOPIC = "orders"


async def _relayed(engine) -> None:
    """Every outbox row as if the relay had published it (and the broker had lost it)."""
    async with engine.begin() as conn:
        await conn.execute(update(outbox).where(outbox.c.sent_at.is_(None)).values(sent_at=func.now()))


async def _requested_ago(engine, order_ids, seconds: float) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(orders)
            .where(orders.c.id.in_(list(order_ids)))
            .values(payment_requested_at=func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds))
        )


async def _resend(engine, older_than: float, limit: int = 1000) -> list[uuid.UUID]:
    async with engine.begin() as conn:
        return await orders_ops.resend_stale_orders(conn, older_than=older_than, topic=TOPIC, limit=limit)


async def test_an_order_whose_request_still_waits_in_the_outbox_is_not_resent(orders_engine):
    order = await place_order(orders_engine, uuid.uuid4(), 5, TOPIC)
    await _requested_ago(orders_engine, [order], 60)
    assert await _resend(orders_engine, older_than=1) == []  # the relay has not sent the first one yet
    await _relayed(orders_engine)
    assert await _resend(orders_engine, older_than=1) == [order]
    assert await _resend(orders_engine, older_than=0) == []  # its copy waits in the outbox now


async def test_an_order_resent_before_waits_longer_for_its_next_copy(orders_engine):
    order = await place_order(orders_engine, uuid.uuid4(), 5, TOPIC)
    await _relayed(orders_engine)
    await _requested_ago(orders_engine, [order], 1.5)
    assert await _resend(orders_engine, older_than=1) == [order]  # first re-send after 1×
    await _relayed(orders_engine)
    await _requested_ago(orders_engine, [order], 1.5)
    assert await _resend(orders_engine, older_than=1) == []  # the second waits 2×
    await _requested_ago(orders_engine, [order], 2.5)
    assert await _resend(orders_engine, older_than=1) == [order]
    async with orders_engine.connect() as conn:
        assert (await conn.execute(select(orders.c.payment_requests).where(orders.c.id == order))).scalar_one() == 3


async def test_one_scan_resends_at_most_its_batch(orders_engine):
    user = uuid.uuid4()
    placed = [await place_order(orders_engine, user, 5, TOPIC) for _ in range(5)]
    await _relayed(orders_engine)
    await _requested_ago(orders_engine, placed, 60)
    assert len(await _resend(orders_engine, older_than=1, limit=2)) == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_waves_wait_for_an_answer_and_back_off_while_none_comes(orders_engine):
    user = uuid.uuid4()
    placed = [await place_order(orders_engine, user, 5, TOPIC) for _ in range(6)]
    clock = Clock()
    redrive = Redrive(older_than=1, topic=TOPIC, batch=2, max_pause=4, clock=clock)

    async def scan() -> int:
        await _relayed(orders_engine)
        await _requested_ago(orders_engine, [o for o in placed if o not in settled], 60)
        async with orders_engine.begin() as conn:
            return await redrive.step(conn)

    settled: set[uuid.UUID] = set()
    assert await scan() == 2  # the first wave
    assert await scan() == 0 and redrive.held == 1  # no answer yet: held
    clock.now += 1
    assert await scan() == 2 and redrive.pause == 2  # no answer in 1 s: the next wave, and a longer pause
    clock.now += 1
    assert await scan() == 0  # within the pause
    clock.now += 1
    assert await scan() == 2 and redrive.pause == 4
    clock.now += 4
    assert await scan() == 2 and redrive.pause == 4  # capped at max_pause
    async with orders_engine.begin() as conn:  # an answer for an order of the last wave
        answered = redrive.wave[0]
        await conn.execute(  # answered 0.1 s after its request: the flow is fast
            text(
                "UPDATE orders SET status = 'success', updated_at = payment_requested_at + interval '0.1 s' "
                "WHERE id = :id"
            ),
            {"id": answered},
        )
    settled.add(answered)
    assert await scan() == 2 and redrive.pause == 1  # answered: the next wave at once, the pause reset


async def test_a_slow_flow_makes_an_order_stale_only_later(orders_engine):
    """Orders answered 20 s after their request: one waiting 30 s is not re-sent (it is slow like the
    others, not lost); at three times the flow's p99 (60 s) it is."""
    user = uuid.uuid4()
    answered = [await place_order(orders_engine, user, 5, TOPIC) for _ in range(5)]
    waiting = await place_order(orders_engine, user, 5, TOPIC)
    await _relayed(orders_engine)
    async with orders_engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE orders SET status = 'success', payment_requested_at = now() - interval '25 s', "
                "updated_at = now() - interval '5 s' WHERE id = ANY(:ids)"
            ),
            {"ids": answered},
        )
    redrive = Redrive(older_than=5, topic=TOPIC, clock=Clock())
    await _requested_ago(orders_engine, [waiting], 30)
    async with orders_engine.begin() as conn:
        assert await redrive.step(conn) == 0
    assert 59 < redrive.threshold < 61
    await _requested_ago(orders_engine, [waiting], 61)
    async with orders_engine.begin() as conn:
        assert await redrive.step(conn) == 1
