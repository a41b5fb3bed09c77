"""The audit's second half: what each service knows of the other's events, against what the topics
still hold (docs/decisions.md, "The audit reads the topics").

Both databases can lose the same tail in one failover (issue 22: 47 orders and their debits gone,
the money invariants still exact). The topics cannot be rolled back with them: an `order.created`
whose order the orders database no longer has, a payment result whose decision the payments
database no longer has, are the gap, named one by one. Four checks:

- `requested_orders_exist`: every payment request on the topic is for an order the orders database
  has (else the orders database lost an order it had answered 202 for; `--repair` recreates it from
  the request and the re-drive settles it);
- `orders_requested_on_topic`: every order whose request was sent is on the topic (else the broker
  lost it; the re-drive re-sends it while the order is `created`);
- `results_applied`: every payment result on the topic was applied by the orders database;
- `results_have_decisions`: every payment result on the topic has its decision in the payments
  database (else the payments database lost a decision, and with a success, a debit).

Only facts the topics still cover are compared: messages published before the databases were read,
orders created after the oldest message read of their partition.

(Over 300 lines: one comparison. The four checks judge the same window of each topic against both
databases; split, that window and its signature checks would be passed between modules.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.audit import Check
from hsepay.orders.tables import orders
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments.tables import payment_decisions
from hsepay.relay.broker import BrokerConfig
from hsepay.relay.history import HistoryEvent, TopicHistory, read_history
from hsepay.relay.signing import EventVerifier

__all__ = ["LostOrder", "TopicAudit", "TopicWitness", "compare_with_topics"]

ORDER_CREATED = "order.created"
RESULTS = ("payment.succeeded", "payment.failed")
CLOCK_MARGIN = 5.0
"""Seconds between a database's clock (created_at) and a producer's (a record's timestamp) that
the coverage of a partition allows for."""
CHUNK = 5_000
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class LostOrder:
    """An order the orders database lost, as its payment request on the topic describes it."""

    order_id: uuid.UUID
    user_id: uuid.UUID
    amount: int
    requested_at: datetime
    event_id: uuid.UUID
    decision: str | None
    """What the payments database decided for it (None: it has no decision either)."""
    suspected_duplicate_of: uuid.UUID | None = None
    """An order of the same user and amount created within the minute after it: possibly the
    client's retry after the failover, answered as a new order. Such a loss is not repaired
    automatically."""

    def describe(self) -> str:
        decided = f"payments decided {self.decision}" if self.decision else "payments has no decision either"
        line = (
            f"order {self.order_id} (user {self.user_id}, amount {self.amount}) requested on the topic at "
            f"{self.requested_at:%Y-%m-%d %H:%M:%S}Z (event {self.event_id}), missing from the orders database; "
            f"{decided}"
        )
        if self.suspected_duplicate_of:
            line += f"; possibly the same purchase as order {self.suspected_duplicate_of}: not repaired, ask the user"
        return line


@dataclass
class TopicAudit:
    checks: list[Check]
    lost_orders: list[LostOrder] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def repairable(self) -> list[LostOrder]:
        return [lost for lost in self.lost_orders if lost.suspected_duplicate_of is None]


@dataclass
class TopicWitness:
    """The topics of one audit: the time is marked before the databases are read (`mark`), their
    history is read after (`compare`), and only messages published before the mark (by the
    producers' clocks, less `clock_margin`) are held against the databases: each side is judged
    only on what the other could have known when it was read."""

    broker: BrokerConfig
    orders_topic: str
    results_topic: str
    max_per_partition: int = 1_000_000
    timeout: float = 300.0
    clock_margin: float = CLOCK_MARGIN
    verifier: EventVerifier | None = None
    """The producers' signatures: a refused record counts as unreadable, never as evidence."""
    marked: float = 0.0

    @property
    def reading_allowance(self) -> float:
        """Seconds a database snapshot must be allowed to sit idle while `compare` reads the topics."""
        return self.timeout + 60

    async def mark(self) -> None:
        """Call before the databases' snapshots are taken."""
        self.marked = time.time()

    async def compare(self, payments: AsyncConnection, orders_conn: AsyncConnection) -> TopicAudit:
        """Call inside the snapshots (after their first statement)."""
        history = await read_history(
            self.broker,
            [self.orders_topic, self.results_topic],
            max_per_partition=self.max_per_partition,
            timeout=self.timeout,
            verifier=self.verifier,
        )
        return await compare_with_topics(
            payments,
            orders_conn,
            history,
            orders_topic=self.orders_topic,
            results_topic=self.results_topic,
            before=self.marked - self.clock_margin,
            clock_margin=self.clock_margin,
        )


def _before(event: HistoryEvent, before: float) -> bool:
    return event.timestamp < before


def _agrees(status: str, result: HistoryEvent) -> bool:
    """Whether a settled order's status is what the payment result says."""
    return (status == "success") == (result.envelope.type == "payment.succeeded")


def _order_id(event: HistoryEvent) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(event.envelope.data["order_id"])) if event.envelope else None
    except (KeyError, ValueError):
        return None


async def _rows_by_id(conn: AsyncConnection, columns, key, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Any]:
    found: dict[uuid.UUID, Any] = {}
    ids = list(ids)
    for start in range(0, len(ids), CHUNK):
        for row in await conn.execute(select(*columns).where(key.in_(ids[start : start + CHUNK]))):
            found[row[0]] = row
    return found


async def compare_with_topics(
    payments: AsyncConnection,
    orders_conn: AsyncConnection,
    history: TopicHistory,
    *,
    orders_topic: str,
    results_topic: str,
    before: float,
    clock_margin: float = CLOCK_MARGIN,
) -> TopicAudit:
    """Compare both databases (read in snapshots taken after the time `before`) with `history`."""
    requests: dict[uuid.UUID, HistoryEvent] = {}
    results: dict[uuid.UUID, list[HistoryEvent]] = {}
    unreadable = 0
    for event in history.events:
        order_id = _order_id(event)
        if order_id is None:
            unreadable += 1
            continue
        if event.topic == orders_topic and event.envelope.type == ORDER_CREATED:
            requests.setdefault(order_id, event)  # the first request; re-drives repeat it
        elif event.topic == results_topic and event.envelope.type in RESULTS:
            results.setdefault(order_id, []).append(event)

    mentioned = set(requests) | set(results)
    known = await _rows_by_id(
        orders_conn,
        (orders.c.id, orders.c.user_id, orders.c.amount, orders.c.status, orders.c.reason, orders.c.created_at),
        orders.c.id,
        mentioned,
    )
    decisions = await _rows_by_id(
        payments,
        (payment_decisions.c.order_id, payment_decisions.c.status, payment_decisions.c.reason),
        payment_decisions.c.order_id,
        mentioned,
    )

    exist = Check("requested_orders_exist", "every payment request on the topic is for an order the orders side has")
    lost: list[LostOrder] = []
    for order_id, event in requests.items():
        if order_id in known or not _before(event, before):
            continue
        data = event.envelope.data
        decision = decisions.get(order_id)
        lost.append(
            LostOrder(
                order_id=order_id,
                user_id=uuid.UUID(str(data["user_id"])),
                amount=int(data["amount"]),
                requested_at=event.envelope.occurred_at,
                event_id=event.envelope.event_id,
                decision=decision.status if decision else None,
            )
        )
    lost = await _flag_duplicates(orders_conn, lost)
    for item in lost:
        exist.add(item.describe())

    applied = Check("results_applied", "every payment result on the topic was applied by the orders side")
    recorded = Check("results_have_decisions", "every payment result on the topic has its decision in payments")
    for order_id, events in results.items():
        settled = [e for e in events if _before(e, before)]
        if not settled:
            continue
        last = settled[-1]
        outcome = "succeeded" if last.envelope.type == "payment.succeeded" else "failed"
        order = known.get(order_id)
        if order is None:
            applied.add(
                f"{last.envelope.type} for order {order_id} is on the topic; the orders database has no such order"
            )
        elif order.status == "created":
            applied.add(
                f"{last.envelope.type} for order {order_id} is on the topic; the order is still created "
                "(the re-drive settles it from the payments decision)"
            )
        elif not _agrees(order.status, last) and not _agrees(order.status, events[-1]):
            # A later result (published after the cut, as a re-drive's new decision after a failover
            # that lost the first one) that agrees with the order explains it: no violation.
            applied.add(f"order {order_id} is {order.status}, but the topic says {last.envelope.type}")
        if order_id not in decisions:
            money = ", and its debit with it" if outcome == "succeeded" else ""
            recorded.add(
                f"{last.envelope.type} for order {order_id} (amount {last.envelope.data.get('amount')}) is on the "
                f"topic; the payments database has no decision for it: it lost the decision{money}"
            )

    on_topic = Check("orders_requested_on_topic", "every order whose payment request was sent is on the topic")
    covered = 0
    oldest = min(history.first_read.values(), default=None)
    if oldest is not None:
        pending = {
            row[0]
            for row in await orders_conn.execute(
                select(orders_outbox.c.headers["correlation_id"].astext).where(orders_outbox.c.sent_at.is_(None))
            )
        }
        since = datetime.fromtimestamp(oldest + clock_margin, UTC)
        for row in await orders_conn.execute(
            select(orders.c.id, orders.c.user_id, orders.c.status, orders.c.created_at).where(
                orders.c.created_at >= since
            )
        ):
            if str(row.id) in pending or not history.covers(
                orders_topic, str(row.user_id), row.created_at.timestamp() - clock_margin
            ):
                continue
            covered += 1
            if row.id not in requests:
                fix = " (the re-drive re-sends it)" if row.status == "created" else ""
                on_topic.add(f"order {row.id} ({row.status}) has no payment request on the topic{fix}")

    return TopicAudit(
        checks=[exist, on_topic, applied, recorded],
        lost_orders=lost,
        facts={
            **history.facts(),
            "requests_on_topic": len(requests),
            "results_on_topic": len(results),
            "unreadable_events": unreadable,
            "refused_signatures": sum(
                1 for e in history.events if e.envelope is None and (e.error or "").startswith("refused")
            ),
            "orders_compared_with_topic": covered,
        },
    )


async def _flag_duplicates(orders_conn: AsyncConnection, lost: list[LostOrder]) -> list[LostOrder]:
    """Mark a lost order that the same user may have placed again after the failover.

    A client whose order was lost with its idempotency record, and who had not had its 202, retries
    and gets a new order: restoring the lost one too would charge that purchase twice. Such a retry
    is an order of the same user and amount created after the whole lost tail (every commit after
    the first lost one was lost with it: the database replays its log in order) and within a
    minute of the lost one."""
    if not lost:
        return lost
    after = max(item.requested_at for item in lost)
    flagged = []
    for item in lost:
        twin = (
            await orders_conn.execute(
                select(orders.c.id)
                .where(
                    orders.c.user_id == item.user_id,
                    orders.c.amount == item.amount,
                    orders.c.created_at > after,
                    orders.c.created_at <= item.requested_at + _MINUTE,
                )
                .order_by(orders.c.created_at)
                .limit(1)
            )
        ).scalar_one_or_none()
        flagged.append(replace(item, suspected_duplicate_of=twin) if twin else item)
    return flagged
