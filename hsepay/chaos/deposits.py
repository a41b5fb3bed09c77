"""Deposits during a chaos run: the other acknowledged write a failover can lose.

An order leaves traces on a topic; a deposit lives only in the payments database. So a deposit the
API answered 200 for and the database no longer has (a failover onto a standby that had not
received it) is invisible to every check but this one: each acknowledged deposit's ledger entry
(reference `deposit:USER:by:CALLER:KEY`, as the API scopes a key by its caller) must be there after
the run.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.chaos.load import GIVE_UP_AFTER, REQUEST_TIMEOUT
from hsepay.payments.tables import ledger_entries

__all__ = ["DepositLoad", "lost_deposits", "make_deposits"]


@dataclass
class DepositLoad:
    acknowledged: dict[str, tuple[uuid.UUID, int]] = field(default_factory=dict)
    """Idempotency key -> (user, amount) of every deposit answered 200."""
    statuses: Counter = field(default_factory=Counter)
    hung: int = 0
    given_up: list[str] = field(default_factory=list)
    sent: int = 0
    caller: uuid.UUID | None = None
    """The subject of the operator's token the deposits were made with (None: auth off)."""

    def reference(self, key: str) -> str:
        """The ledger reference the payments API gives the deposit (api/payments.py: scoped by caller)."""
        user, _ = self.acknowledged[key]
        return f"deposit:{user}:{key}" if self.caller is None else f"deposit:{user}:by:{self.caller}:{key}"

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500 and status != 503)


async def _deposit_one(client: httpx.AsyncClient, key: str, user: uuid.UUID, amount: int, load: DepositLoad) -> None:
    deadline = time.monotonic() + GIVE_UP_AFTER
    delay = 0.1
    while True:
        try:
            response = await client.post(
                f"/accounts/{user}/deposit",
                json={"amount": amount},
                headers={"Idempotency-Key": key},
                timeout=REQUEST_TIMEOUT,
            )
        except httpx.TimeoutException:
            load.hung += 1
        except httpx.TransportError:
            pass
        else:
            load.statuses[response.status_code] += 1
            if response.status_code == 200:
                load.acknowledged[key] = (user, amount)
                return
            if response.status_code < 500 and response.status_code != 429:
                load.given_up.append(f"{key}: {response.status_code} {response.text[:200]}")
                return
        if time.monotonic() > deadline:
            load.given_up.append(f"{key}: no 200 within {GIVE_UP_AFTER:g}s")
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def make_deposits(
    payments_url: str,
    users: Sequence[uuid.UUID],
    *,
    rate: float,
    seed: int,
    until: asyncio.Event,
    headers: dict[str, str],
    caller: uuid.UUID | None = None,
    concurrency: int = 16,
) -> DepositLoad:
    """Deposits of 1..5 into `users`' accounts at `rate` per second over HTTP until `until` is set,
    each retried with its Idempotency-Key until answered 200 (as a careful client would).

    At most `concurrency` are in flight; the others wait their turn. Unbounded, the deposits
    retried through a 60 s failover piled up in httpx's pool, whose queue is scanned for every
    request: the load generator's loop spent its CPU there, and the APIs waited for bodies that
    never came."""
    rng = random.Random(seed ^ 0xD5)
    load = DepositLoad(caller=caller)
    tasks: list[asyncio.Task] = []
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def one(key: str, user: uuid.UUID, amount: int) -> None:
        async with slots:
            await _deposit_one(client, key, user, amount, load)

    async with httpx.AsyncClient(base_url=payments_url, headers=headers, limits=limits) as client:
        begin = time.monotonic()
        index = 0
        while not until.is_set():
            pause = begin + index / rate - time.monotonic()
            if pause > 0:
                try:
                    await asyncio.wait_for(until.wait(), timeout=pause)
                    break
                except TimeoutError:
                    pass
            key = f"chaos-deposit-{seed}-{index}"
            tasks.append(asyncio.create_task(one(key, rng.choice(users), rng.randint(1, 5))))
            index += 1
        load.sent = len(tasks)
        await asyncio.gather(*tasks)
    return load


async def lost_deposits(payments: AsyncConnection, load: DepositLoad) -> list[str]:
    """Every deposit answered 200 whose ledger entry the payments database does not have."""
    wanted = {load.reference(key): key for key in load.acknowledged}
    found: set[str] = set()
    references = list(wanted)
    for start in range(0, len(references), 1000):
        rows = await payments.execute(
            select(ledger_entries.c.reference).where(
                ledger_entries.c.kind == "deposit", ledger_entries.c.reference.in_(references[start : start + 1000])
            )
        )
        found.update(row.reference for row in rows)
    return [
        f"deposit {key} of {load.acknowledged[key][1]} to {load.acknowledged[key][0]} answered 200, not in the ledger"
        for reference, key in wanted.items()
        if reference not in found
    ]
