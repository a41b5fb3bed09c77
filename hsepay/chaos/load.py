"""The order load of a chaos run: real HTTP clients that retry as a careful client would.

Each intended order has its own Idempotency-Key and is retried on a 503, a 5xx or a transport error
until the API accepts it, so every intention ends as exactly one order (or is reported). Every
answer is counted by status, and so is every request that outlived the client's timeout: the
APIs must answer 503 problem+json while the database is down, never 500, never hang.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

__all__ = ["NO_ANSWER", "TRANSPORT_ERROR", "LoadResult", "place_orders"]

REQUEST_TIMEOUT = 10.0
GIVE_UP_AFTER = 120.0
TRANSPORT_ERROR = -1
NO_ANSWER = -2


@dataclass
class LoadResult:
    accepted: dict[str, uuid.UUID] = field(default_factory=dict)
    """Idempotency key -> order id, for every order the API accepted."""
    given_up: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    transport_errors: Counter = field(default_factory=Counter)
    hung: int = 0
    """Requests that got no answer within REQUEST_TIMEOUT."""
    slow: list[tuple[float, float, str]] = field(default_factory=list)
    """(sent at, seconds, outcome) of every request that took longer than a second."""
    unavailable: list[tuple[float, float]] = field(default_factory=list)
    """(sent at, seconds to the answer) of every 503: when the database was unavailable, and how fast
    the API said so."""
    answers: list[tuple[float, float, int]] = field(default_factory=list)
    """(sent at, seconds, status) of every request: the HTTP status, TRANSPORT_ERROR or NO_ANSWER."""
    replays: int = 0
    sent: int = 0
    """Orders the load intended (the count, or more when it ran until the faults were over)."""
    started: float = 0.0
    finished: float = 0.0

    @property
    def server_errors(self) -> int:
        """5xx answers other than 503 (503 is the promised answer while the database is down)."""
        return sum(count for status, count in self.statuses.items() if status >= 500 and status != 503)


async def _place_one(
    client: httpx.AsyncClient, key: str, body: dict, headers: dict[str, str], result: LoadResult
) -> None:
    deadline = time.monotonic() + GIVE_UP_AFTER
    delay = 0.1
    while True:
        sent = time.time()
        try:
            response = await client.post(
                "/orders", json=body, headers={**headers, "Idempotency-Key": key}, timeout=REQUEST_TIMEOUT
            )
        except httpx.TimeoutException:
            result.hung += 1
            result.slow.append((sent, time.time() - sent, "no answer"))
            result.answers.append((sent, time.time() - sent, NO_ANSWER))
        except httpx.TransportError as exc:
            result.transport_errors[type(exc).__name__] += 1
            result.answers.append((sent, time.time() - sent, TRANSPORT_ERROR))
        else:
            result.answers.append((sent, time.time() - sent, response.status_code))
            if time.time() - sent > 1.0:
                result.slow.append((sent, time.time() - sent, str(response.status_code)))
            result.statuses[response.status_code] += 1
            if response.status_code == 503:
                result.unavailable.append((sent, time.time() - sent))
            if response.status_code == 202:
                result.accepted[key] = uuid.UUID(response.json()["id"])
                if response.headers.get("Idempotent-Replayed") == "true":
                    result.replays += 1
                return
            if response.status_code < 500 and response.status_code != 429:
                result.given_up.append(f"{key}: {response.status_code} {response.text[:200]}")
                return
        if time.monotonic() > deadline:
            result.given_up.append(f"{key}: no 202 within {GIVE_UP_AFTER:g}s")
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def place_orders(
    orders_url: str,
    users: list[uuid.UUID],
    *,
    count: int,
    rate: float,
    seed: int,
    headers: dict[uuid.UUID, dict[str, str]] | None = None,
    concurrency: int = 64,
    until: asyncio.Event | None = None,
) -> LoadResult:
    """`count` orders at `rate` per second over HTTP, amounts 1..20 from random `users`; more at the
    same rate until `until` is set, if given (so that the load spans every fault). `headers` holds
    each user's own (its bearer token when auth is on)."""
    rng = random.Random(seed)
    result = LoadResult(started=time.time())
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    slots = asyncio.Semaphore(concurrency)
    tasks: list[asyncio.Task] = []

    async def one(index: int, user: uuid.UUID, body: dict) -> None:
        async with slots:
            await _place_one(client, f"chaos-{seed}-{index}", body, (headers or {}).get(user, {}), result)

    async with httpx.AsyncClient(base_url=orders_url, limits=limits) as client:
        begin = time.monotonic()
        index = -1
        while True:
            index += 1
            if index >= count and (until is None or until.is_set()):
                break
            user = rng.choice(users)
            body = {"user_id": str(user), "amount": rng.randint(1, 20), "description": f"chaos {index}"}
            pause = begin + index / rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(one(index, user, body)))
        result.sent = len(tasks)
        await asyncio.gather(*tasks)
    result.finished = time.time()
    return result
