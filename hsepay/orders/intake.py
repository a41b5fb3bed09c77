"""Taking orders in batches: the orders and payment requests of many requests in one transaction.

Used through `hsepay.batching.GroupCommit` by the orders API: each request keeps its own answer
(a new order, a replay of the answer stored under its Idempotency-Key, or a refusal), and the
answers of keyed requests are stored in the same transaction as the orders they describe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay import idempotency
from hsepay.idempotency import Claim, StoredResponse
from hsepay.orders.model import Order
from hsepay.orders.operations import NewOrder, create_orders

__all__ = ["OrderRequest", "Replayed", "accept_orders", "none_keyed", "one_claim_per_key"]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    order: NewOrder
    claim: Claim | None = None


@dataclass(frozen=True, slots=True)
class Replayed:
    """The answer stored under the request's Idempotency-Key; nothing new was written."""

    response: StoredResponse


async def accept_orders(
    conn: AsyncConnection,
    requests: Sequence[OrderRequest],
    *,
    topic: str,
    keys: Table,
    respond: Callable[[Order], StoredResponse],
) -> list[StoredResponse | Replayed | BaseException]:
    """Claim the batch's keys, create the orders of the requests not answered before, and store the
    answers of the keyed ones; `respond` turns a new order into the answer its request gets.

    A batch without a key (`none_keyed`) is written by exactly one statement (`create_orders`),
    which lets the group commit run it without a transaction around it."""
    answers: list[StoredResponse | Replayed | BaseException | None] = [None] * len(requests)
    keyed = [i for i, request in enumerate(requests) if request.claim is not None]
    outcomes = await idempotency.claim_many(conn, keys, [requests[i].claim for i in keyed])
    for i, outcome in zip(keyed, outcomes, strict=True):
        if isinstance(outcome, StoredResponse):
            answers[i] = Replayed(outcome)
        elif outcome is not None:
            answers[i] = outcome
    fresh = [i for i, answer in enumerate(answers) if answer is None]
    orders = await create_orders(conn, [requests[i].order for i in fresh], topic=topic)
    for i, order in zip(fresh, orders, strict=True):
        answers[i] = respond(order)
    await idempotency.record_many(
        conn, keys, [(requests[i].claim, answers[i]) for i in fresh if requests[i].claim is not None]
    )
    return answers  # type: ignore[return-value]


def none_keyed(requests: Sequence[OrderRequest]) -> bool:
    """Whether no request of the batch carries an Idempotency-Key (then `accept_orders` is one statement)."""
    return all(request.claim is None for request in requests)


def one_claim_per_key(requests: Sequence[OrderRequest]) -> tuple[list[int], list[int]]:
    """(now, later): a batch takes one request per key; a second request with the same key waits for
    the next batch, where it is a replay of the first (or a 409 if its body differs)."""
    seen: set[tuple[str, str]] = set()
    now, later = [], []
    for i, request in enumerate(requests):
        claim = request.claim
        if claim is None:
            now.append(i)
        elif (claim.scope, claim.key) in seen:
            later.append(i)
        else:
            seen.add((claim.scope, claim.key))
            now.append(i)
    return now, later
