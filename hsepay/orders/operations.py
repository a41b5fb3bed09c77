"""Orders service layer: each function runs inside the caller's transaction (`conn`).

(Over 300 lines: the one service layer the API, the consumer, the re-drive and the audit's repair
call; every function is one operation on the orders tables.)
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from sqlalchemy import func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay import pgarray
from hsepay.events import PaymentFailed
from hsepay.orders.errors import InvalidCursor, OrderNotFound
from hsepay.orders.events import payment_requested
from hsepay.orders.model import CREATED, CURSOR_PATTERN, FAILED, SUCCESS, Order, PaymentResult
from hsepay.orders.tables import orders, outbox
from hsepay.relay.store import driver_connection, enqueue, enqueue_parameters, enqueue_statement

log = logging.getLogger(__name__)

CURSOR = re.compile(CURSOR_PATTERN)

__all__ = [
    "NewOrder",
    "Settled",
    "Settlement",
    "apply_payment_results",
    "create_order",
    "create_orders",
    "find_orders",
    "get_order",
    "list_orders",
    "any_settled",
    "recent_settle_time",
    "redrive_stale_orders",
    "restore_orders",
    "resend_stale_orders",
]

_COLUMNS = (
    orders.c.id,
    orders.c.user_id,
    orders.c.amount,
    orders.c.description,
    orders.c.status,
    orders.c.reason,
    orders.c.created_at,
    orders.c.updated_at,
)


_INSERT_ORDERS = (
    "WITH new AS ("
    "INSERT INTO orders (id, user_id, amount, description) "
    "SELECT * FROM unnest(%(ids)s::uuid[], %(users)s::uuid[], %(amounts)s::bigint[], %(descriptions)s::text[]) "
    "RETURNING id, status, created_at, updated_at"
    f"), queued AS ({enqueue_statement(outbox)}) "
    "SELECT id, status, created_at, updated_at FROM new"
)
"""Orders and their payment requests in ONE statement: atomic on its own (an API batch of new orders
runs it in autocommit, without BEGIN and COMMIT: hsepay.batching), one round trip, and prepared
once per connection (psycopg), so a lone order costs one statement's work instead of four."""


def _order(row) -> Order:
    return Order(**{column.name: getattr(row, column.name) for column in _COLUMNS})


@dataclass(frozen=True, slots=True)
class NewOrder:
    user_id: uuid.UUID
    amount: int
    description: str = ""


async def create_orders(conn: AsyncConnection, new: Sequence[NewOrder], *, topic: str) -> list[Order]:
    """Insert orders and their payment requests (outbox) in the caller's transaction: all or none.

    One statement of fixed text, whatever the number of orders (`_INSERT_ORDERS`); results are in
    `new`'s order. Run alone, in autocommit, it is still all or none.
    """
    if not new:
        return []
    ids = [uuid.uuid4() for _ in new]
    messages = [
        payment_requested(order_id=order_id, user_id=n.user_id, amount=n.amount, topic=topic)
        for order_id, n in zip(ids, new, strict=True)
    ]
    driver = await driver_connection(conn)
    cursor = await driver.execute(
        _INSERT_ORDERS,
        {
            "ids": pgarray.uuids(ids),
            "users": pgarray.uuids(n.user_id for n in new),
            "amounts": pgarray.ints(n.amount for n in new),
            "descriptions": pgarray.texts([n.description for n in new]),
            **enqueue_parameters(messages),
        },
        prepare=True,
    )
    by_id = {row[0]: row for row in await cursor.fetchall()}  # RETURNING promises no order
    return [
        Order(
            id=order_id,
            user_id=n.user_id,
            amount=n.amount,
            description=n.description,
            status=by_id[order_id][1],
            reason=None,
            created_at=by_id[order_id][2],
            updated_at=by_id[order_id][3],
        )
        for order_id, n in zip(ids, new, strict=True)
    ]


async def create_order(
    conn: AsyncConnection, *, user_id: uuid.UUID, amount: int, description: str, topic: str
) -> Order:
    """Insert one order and its payment request (outbox) in the caller's transaction: both or neither."""
    (order,) = await create_orders(conn, [NewOrder(user_id, amount, description)], topic=topic)
    return order


_FIND_ORDERS = (
    "SELECT o.id, o.user_id, o.amount, o.description, o.status, o.reason, o.created_at, o.updated_at "
    "FROM unnest(%s::uuid[]) AS w(id) CROSS JOIN LATERAL (SELECT * FROM orders WHERE id = w.id LIMIT 1) AS o"
)
"""One primary-key probe per id (as payments' _DECIDED, and for the same reason: `id = ANY(…)` over
a batch of ids could be planned as a scan of the whole table)."""


async def find_orders(conn: psycopg.AsyncConnection, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Order]:
    """The orders of `ids` that exist, by id: one prepared statement on a psycopg connection (the
    API's group read of GET /order/{id}; see hsepay.group_read)."""
    cursor = await conn.execute(_FIND_ORDERS, (pgarray.uuids(ids),), prepare=True)
    return {
        row[0]: Order(
            id=row[0],
            user_id=row[1],
            amount=row[2],
            description=row[3],
            status=row[4],
            reason=row[5],
            created_at=row[6],
            updated_at=row[7],
        )
        for row in await cursor.fetchall()
    }


async def get_order(conn: AsyncConnection, order_id: uuid.UUID) -> Order:
    row = (await conn.execute(select(*_COLUMNS).where(orders.c.id == order_id))).first()
    if row is None:
        raise OrderNotFound(f"no order {order_id}")
    return _order(row)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_cursor(order: Order) -> str:
    """The position after `order` in the newest-first listing: `<created_at in µs since 1970>.<id hex>`.

    Every string of that shape (CURSOR_PATTERN) is a position, so the API accepts whatever its
    OpenAPI document allows; a position says nothing a page does not show.
    """
    return f"{(order.created_at - _EPOCH) // _MICROSECOND}.{order.id.hex}"


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    if not CURSOR.fullmatch(cursor):
        raise InvalidCursor(f"a cursor is <microseconds since 1970>.<32 hex digits> ({CURSOR_PATTERN})")
    micros, _, ident = cursor.partition(".")
    return _EPOCH + int(micros) * _MICROSECOND, uuid.UUID(hex=ident)


async def list_orders(
    conn: AsyncConnection,
    *,
    user_id: uuid.UUID | None = None,
    status: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[list[Order], str | None]:
    """Newest first; returns a page and the cursor of the next page (None on the last page)."""
    query = select(*_COLUMNS).order_by(orders.c.created_at.desc(), orders.c.id.desc()).limit(limit + 1)
    if user_id is not None:
        query = query.where(orders.c.user_id == user_id)
    if status is not None:
        query = query.where(orders.c.status == status)
    if cursor:
        created_at, order_id = decode_cursor(cursor)
        query = query.where(tuple_(orders.c.created_at, orders.c.id) < tuple_(created_at, order_id))
    page = [_order(row) for row in await conn.execute(query)]
    if len(page) > limit:
        return page[:limit], encode_cursor(page[limit - 1])
    return page, None


# One statement: each result row with its order's user and amount as they were (NULL: no such
# order), and the orders it settles. Only a `created` order whose user and amount are the result's
# changes, so a late, duplicate or mismatched result is a no-op here whatever Python decides.
# Fixed text with the rows as arrays, run as a prepared statement on the driver connection (it may
# run in the inbox's pipeline, see hsepay.relay.store.pipeline).
_SETTLE = (
    "WITH r AS (SELECT * FROM unnest(%(ids)s::uuid[], %(users)s::uuid[], %(amounts)s::bigint[], "
    "%(statuses)s::text[], %(reasons)s::text[]) "
    "WITH ORDINALITY AS r(id, user_id, amount, status, reason, n)), "
    "settled AS (UPDATE orders AS o SET status = r.status, reason = r.reason, updated_at = now() FROM r "
    "WHERE o.id = r.id AND o.user_id = r.user_id AND o.amount = r.amount AND o.status = 'created' "
    "RETURNING o.id, o.status, o.created_at, o.updated_at) "
    "SELECT r.n, o.user_id AS order_user, o.amount AS order_amount, "
    "s.id AS settled_id, s.status, s.created_at, s.updated_at "
    "FROM r LEFT JOIN orders AS o ON o.id = r.id LEFT JOIN settled AS s ON s.id = r.id ORDER BY r.n"
)


@dataclass(frozen=True, slots=True)
class Settled:
    """An order that just reached its final status; both times are the database's clock."""

    order_id: uuid.UUID
    status: str
    created_at: datetime
    settled_at: datetime

    @property
    def seconds(self) -> float:
        return (self.settled_at - self.created_at).total_seconds()


@dataclass(frozen=True, slots=True)
class Settlement:
    settled: list[Settled]
    """Orders that reached their final status now."""
    mismatched: dict[int, str]
    """Position in the results -> why that result does not belong to its order (never applied)."""


async def apply_payment_results(conn: AsyncConnection, results: Sequence[PaymentResult]) -> Settlement:
    """Settle orders from payment results.

    A result counts only if its order exists with the result's user and amount; the others are
    returned as mismatched, with the reason. Only `created` orders change, so a late or duplicate
    result is a no-op (payments never answers one order two ways).
    """
    if not results:
        return Settlement([], {})
    failed = [isinstance(result, PaymentFailed) for result in results]
    driver = await driver_connection(conn)
    outcome = await driver.execute(
        _SETTLE,
        {
            "ids": pgarray.uuids(result.order_id for result in results),
            "users": pgarray.uuids(result.user_id for result in results),
            "amounts": pgarray.ints(result.amount for result in results),
            "statuses": pgarray.texts([FAILED if f else SUCCESS for f in failed]),
            "reasons": pgarray.texts(
                [result.reason if isinstance(result, PaymentFailed) else None for result in results]
            ),
        },
        prepare=True,
    )
    settled: dict[uuid.UUID, Settled] = {}
    mismatched: dict[int, str] = {}
    for n, order_user, order_amount, settled_id, status, created_at, updated_at in await outcome.fetchall():
        position = n - 1
        result = results[position]
        if order_user is None:
            mismatched[position] = f"payment result for order {result.order_id}, which does not exist"
        elif order_user != result.user_id or order_amount != result.amount:
            mismatched[position] = (
                f"payment result does not match order {result.order_id}: user {result.user_id} and amount "
                f"{result.amount}, the order's are {order_user} and {order_amount}"
            )
        elif settled_id is not None:
            settled[settled_id] = Settled(settled_id, status, created_at, updated_at)
    return Settlement(list(settled.values()), mismatched)


REDRIVE_SPREAD = 4
"""An order re-sent n times waits older_than × 2^min(n-1, 2) before the next re-send: 1×, 2×, then 4×."""


async def resend_stale_orders(
    conn: AsyncConnection, *, older_than: float, topic: str, limit: int = 1000
) -> list[uuid.UUID]:
    """Re-send the payment request of up to `limit` orders still `created` after `older_than`
    seconds (longer for an order re-sent before, see REDRIVE_SPREAD); return their ids.

    The payments side answers a repeated request from its decision record, so this never debits
    twice; it is what recovers orders whose messages a broker lost. An order whose last request
    still waits in the outbox is left alone: the relay has not sent it yet, and another copy
    behind it would change nothing.
    """
    requests = orders.c.payment_requests
    spread = func.least(func.power(2, requests - 1), REDRIVE_SPREAD)
    unsent = (
        select(func.cast(outbox.c.headers["correlation_id"].astext, orders.c.id.type))
        .where(outbox.c.sent_at.is_(None))
        .scalar_subquery()
    )
    stale = (
        await conn.execute(
            select(orders.c.id, orders.c.user_id, orders.c.amount)
            .where(
                orders.c.status == CREATED,
                orders.c.payment_requested_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than),
                orders.c.payment_requested_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than) * spread,
                orders.c.id.not_in(unsent),
            )
            .order_by(orders.c.payment_requested_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not stale:
        return []
    await conn.execute(
        update(orders)
        .where(orders.c.id.in_([row.id for row in stale]))
        .values(payment_requested_at=func.now(), payment_requests=requests + 1)
    )
    messages = [
        payment_requested(order_id=row.id, user_id=row.user_id, amount=row.amount, topic=topic) for row in stale
    ]
    await enqueue(conn, outbox, messages)
    for message in messages:
        order_id = message.headers["correlation_id"]
        extra = {"order_id": order_id, "correlation_id": order_id, "event_id": str(message.event_id)}
        log.info("re-sending the payment request of order %s", order_id, extra=extra)
    return [row.id for row in stale]


async def redrive_stale_orders(conn: AsyncConnection, *, older_than: float, topic: str, limit: int = 1000) -> int:
    """`resend_stale_orders`, counted."""
    return len(await resend_stale_orders(conn, older_than=older_than, topic=topic, limit=limit))


async def recent_settle_time(conn: AsyncConnection, *, window: float, quantile: float = 0.99) -> float | None:
    """How long the payment requests of orders created in the last `window` seconds took to be
    answered (from the last request sent: a re-sent one that was answered at once counts as fast),
    the `quantile`, in seconds; None if none of them has settled."""
    took = func.extract("epoch", orders.c.updated_at - orders.c.payment_requested_at)
    found = await conn.execute(
        select(func.percentile_cont(quantile).within_group(took)).where(
            orders.c.created_at > func.now() - func.make_interval(0, 0, 0, 0, 0, 0, window),
            orders.c.status != CREATED,
        )
    )
    value = found.scalar()
    return float(value) if value is not None else None


async def any_settled(conn: AsyncConnection, order_ids: Sequence[uuid.UUID]) -> bool:
    """Has any of these orders reached its final status?"""
    found = await conn.execute(
        select(orders.c.id).where(orders.c.id.in_(list(order_ids)), orders.c.status != CREATED).limit(1)
    )
    return found.first() is not None


RESTORED_DESCRIPTION = "(restored from its payment request after the orders database lost it)"


async def restore_orders(conn: AsyncConnection, lost: Sequence[tuple[uuid.UUID, uuid.UUID, int, datetime]]) -> int:
    """Recreate orders (id, user, amount, requested at) that the database lost but whose payment
    request the topic still holds; returns how many were recreated (an order that exists is left alone).

    Each comes back `created`, with no new outbox row and its payment requested long ago: the
    re-drive sends its request again at its next turn, and the payments side answers from the
    decision it kept, or decides now if it lost that too. The debit stays unique by order id, so
    this never debits twice. The description was never on the topic; it says where the order came from.
    """
    if not lost:
        return 0
    inserted = await conn.execute(
        text(
            "INSERT INTO orders (id, user_id, amount, description, created_at, updated_at, payment_requested_at) "
            "SELECT id, user_id, amount, :description, at, now(), '-infinity' FROM unnest("
            "CAST(:ids AS uuid[]), CAST(:users AS uuid[]), CAST(:amounts AS bigint[]), CAST(:ats AS timestamptz[])"
            ") AS r(id, user_id, amount, at) ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        {
            "description": RESTORED_DESCRIPTION,
            "ids": [item[0] for item in lost],
            "users": [item[1] for item in lost],
            "amounts": [item[2] for item in lost],
            "ats": [item[3] for item in lost],
        },
    )
    restored = [row.id for row in inserted]
    for order_id in restored:
        log.warning("restored order %s from its payment request", order_id, extra={"order_id": str(order_id)})
    return len(restored)
