"""`hsepay audit`: the money invariants of DESIGN §5, checked across both databases.

Read-only. Each check returns its violations; an empty list means it holds. Run it when the
system is quiet: an order whose payment was decided but whose result is still in flight is
reported as in flight, and conservation is only exact once nothing is.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay.orders.tables import orders
from hsepay.payments.tables import accounts, ledger_entries, payment_decisions

__all__ = ["AuditReport", "check_invariants", "snapshots"]

MAX_LISTED = 20


@asynccontextmanager
async def snapshots(
    payments: AsyncEngine, orders_engine: AsyncEngine, *, idle_allowed: float | None = None
) -> AsyncIterator[tuple[AsyncConnection, AsyncConnection]]:
    """One read-only repeatable-read snapshot per database, so each side is read consistently.

    `idle_allowed`: seconds each may sit idle between statements (while the topics are read). Every
    session is ended by the server after 5 s idle in a transaction (HSEPAY_DB_IDLE_IN_TRANSACTION_TIMEOUT,
    against sessions that hold locks); these hold none, and the topic history of a one-hour soak took
    longer than that to read, so the audit failed with IdleInTransactionSessionTimeout."""
    async with payments.connect() as p, orders_engine.connect() as o:
        for conn in (p, o):
            await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            if idle_allowed is not None:
                await conn.exec_driver_sql(
                    f"SET LOCAL idle_in_transaction_session_timeout = {int(idle_allowed * 1000)}"
                )
        yield p, o


@dataclass
class Check:
    name: str
    description: str
    violations: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.violations) < MAX_LISTED:
            self.violations.append(message)

    @property
    def ok(self) -> bool:
        return self.count == 0


@dataclass
class AuditReport:
    checks: list[Check]
    facts: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "facts": self.facts,
            "checks": [
                {
                    "name": c.name,
                    "description": c.description,
                    "ok": c.ok,
                    "violations": c.count,
                    "examples": c.violations,
                }
                for c in self.checks
            ],
        }


_SIGNED = case((ledger_entries.c.kind == "deposit", ledger_entries.c.amount), else_=-ledger_entries.c.amount)


async def check_invariants(payments: AsyncConnection, orders_conn: AsyncConnection) -> AuditReport:
    negative = Check("balance_not_negative", "no account balance is negative")
    for row in await payments.execute(select(accounts.c.user_id, accounts.c.balance).where(accounts.c.balance < 0)):
        negative.add(f"account {row.user_id} has balance {row.balance}")

    ledger = Check("balance_equals_ledger", "every balance equals the sum of its ledger entries")
    sums = (
        select(ledger_entries.c.user_id, func.sum(_SIGNED).label("total")).group_by(ledger_entries.c.user_id).subquery()
    )
    for row in await payments.execute(
        select(accounts.c.user_id, accounts.c.balance, func.coalesce(sums.c.total, 0).label("total"))
        .select_from(accounts.outerjoin(sums, sums.c.user_id == accounts.c.user_id))
        .where(accounts.c.balance != func.coalesce(sums.c.total, 0))
    ):
        ledger.add(f"account {row.user_id}: balance {row.balance} but ledger sums to {row.total}")

    decisions = {
        row.order_id: row
        for row in await payments.execute(
            select(
                payment_decisions.c.order_id,
                payment_decisions.c.user_id,
                payment_decisions.c.amount,
                payment_decisions.c.status,
                payment_decisions.c.reason,
            )
        )
    }
    debits: dict[uuid.UUID, list[int]] = {}
    for row in await payments.execute(
        select(ledger_entries.c.reference, ledger_entries.c.amount).where(ledger_entries.c.kind == "debit")
    ):
        debits.setdefault(uuid.UUID(row.reference), []).append(row.amount)

    once = Check("debited_at_most_once", "each order is debited at most once, and only with a succeeded decision")
    for order_id, amounts in debits.items():
        decision = decisions.get(order_id)
        if len(amounts) > 1:
            once.add(f"order {order_id} debited {len(amounts)} times")
        if decision is None or decision.status != "succeeded" or decision.amount != amounts[0]:
            once.add(f"order {order_id} debited {amounts[0]} without a matching succeeded decision")
    for order_id, decision in decisions.items():
        if decision.status == "succeeded" and order_id not in debits:
            once.add(f"order {order_id} decided succeeded but never debited")

    agree = Check("orders_match_decisions", "every settled order matches the payment decision for it")
    success_total = 0
    in_flight = 0
    stuck = 0
    known_orders: set[uuid.UUID] = set()
    for row in await orders_conn.execute(
        select(orders.c.id, orders.c.user_id, orders.c.amount, orders.c.status, orders.c.reason)
    ):
        known_orders.add(row.id)
        decision = decisions.get(row.id)
        if decision is not None and (decision.user_id != row.user_id or decision.amount != row.amount):
            agree.add(
                f"order {row.id} is for {row.amount} from user {row.user_id}, but payments decided on "
                f"{decision.amount} from user {decision.user_id}"
            )
        if row.status == "success":
            success_total += row.amount
            if decision is None or decision.status != "succeeded" or decision.amount != row.amount:
                agree.add(f"order {row.id} is success without a matching succeeded payment")
        elif row.status == "failed":
            if decision is not None and (decision.status != "failed" or decision.reason != row.reason):
                agree.add(f"order {row.id} is failed ({row.reason}) but payments decided {decision.status}")
        elif decision is not None:
            in_flight += 1
        else:
            stuck += 1

    # A decision for an order the orders side never created: a forged or misrouted payment request.
    # Named one by one, since each one that succeeded is a debit the conservation check cannot place.
    orphans = Check("decisions_have_orders", "every payment decision is for an order the orders side created")
    orphan_debits = 0
    for order_id, decision in decisions.items():
        if order_id not in known_orders:
            debited = debits.get(order_id)
            if debited:
                orphan_debits += sum(debited)
            orphans.add(
                f"payment decision {decision.status} for unknown order {order_id}: user {decision.user_id}, "
                f"amount {decision.amount}"
                + (f", debited {sum(debited)} (ledger reference {order_id})" if debited else "")
            )

    totals = (
        await payments.execute(
            select(
                select(func.coalesce(func.sum(accounts.c.balance), 0)).scalar_subquery(),
                select(func.coalesce(func.sum(ledger_entries.c.amount), 0))
                .where(ledger_entries.c.kind == "deposit")
                .scalar_subquery(),
            )
        )
    ).one()
    balances, deposits = int(totals[0]), int(totals[1])
    conservation = Check("conservation", "sum(balances) + sum(successful order amounts) == sum(deposits)")
    if balances + success_total != deposits:
        hint = f" ({in_flight} order(s) still in flight: re-run when quiet)" if in_flight else ""
        if orphan_debits:
            hint += f" ({orphan_debits} debited for orders the orders side never created: see decisions_have_orders)"
        conservation.add(
            f"balances {balances} + successful orders {success_total} = {balances + success_total}, "
            f"deposits {deposits}{hint}"
        )

    return AuditReport(
        checks=[negative, ledger, once, agree, orphans, conservation],
        facts={
            "accounts_balance_total": balances,
            "deposits_total": deposits,
            "successful_orders_total": success_total,
            "decisions": len(decisions),
            "orders_in_flight": in_flight,
            "orders_awaiting_decision": stuck,
        },
    )
