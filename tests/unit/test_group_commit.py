"""Group commit against a fake engine: batching, per-item answers and refusals, the fallback to
one item per transaction, the database-unavailable case, and deferral of a repeated key."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.exc import OperationalError

from hsepay.batching import GroupCommit


class FakeEngine:
    """engine.begin() as a context manager; records what each transaction held. Its autocommit
    form (`execution_options(isolation_level="AUTOCOMMIT").connect()`) opens no transaction."""

    def __init__(self, autocommit: bool = False) -> None:
        self.transactions: list[list] = []
        self.gate: asyncio.Event | None = None
        self.autocommit = autocommit
        self.in_transaction = False

    @contextlib.asynccontextmanager
    async def begin(self):
        if self.gate is not None:
            await self.gate.wait()
        self.in_transaction = True
        try:
            yield self
        finally:
            self.in_transaction = False

    def execution_options(self, isolation_level: str) -> FakeEngine:
        assert isolation_level == "AUTOCOMMIT"
        engine = FakeEngine(autocommit=True)
        engine.transactions = self.transactions
        return engine

    @contextlib.asynccontextmanager
    async def connect(self):
        assert self.autocommit
        yield self


async def _gather(commit: GroupCommit, items):
    return await asyncio.gather(*(commit.submit(item) for item in items), return_exceptions=True)


async def test_concurrent_items_share_transactions_and_keep_their_own_answers():
    engine = FakeEngine()
    engine.gate = asyncio.Event()

    async def apply(conn, items):
        conn.transactions.append(list(items))
        return [item * 10 if item % 7 else ValueError(f"{item} refused") for item in items]

    commit = GroupCommit(engine, apply, in_flight=1)
    pending = asyncio.ensure_future(_gather(commit, range(1, 51)))
    await asyncio.sleep(0)  # every submit queued while the first transaction waits at the gate
    engine.gate.set()
    results = await pending
    for item, result in zip(range(1, 51), results, strict=True):
        if item % 7:
            assert result == item * 10
        else:
            assert isinstance(result, ValueError) and str(result) == f"{item} refused"
    assert len(engine.transactions) <= 2  # the first item alone (it went at once), then the rest
    assert sorted(i for t in engine.transactions for i in t) == list(range(1, 51))


async def test_a_batch_that_fails_is_applied_one_item_at_a_time():
    engine = FakeEngine()

    async def apply(conn, items):
        conn.transactions.append(list(items))
        if 13 in items and len(items) > 1:
            raise RuntimeError("constraint violated by 13")
        if items == [13]:
            raise RuntimeError("13 is bad")
        return [item for item in items]

    commit = GroupCommit(engine, apply, max_batch=10, in_flight=1)
    results = await _gather(commit, range(10, 20))
    assert [r for r in results if not isinstance(r, Exception)] == [i for i in range(10, 20) if i != 13]
    assert isinstance(results[3], RuntimeError) and str(results[3]) == "13 is bad"


async def test_an_unavailable_database_fails_the_whole_batch_without_retrying_items():
    engine = FakeEngine()
    calls = []

    async def apply(conn, items):
        calls.append(list(items))
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("server down"))

    commit = GroupCommit(engine, apply)
    results = await _gather(commit, range(5))
    assert all(isinstance(r, OperationalError) for r in results)
    assert sum(len(c) for c in calls) == 5  # each item in one transaction attempt only


async def test_a_batch_written_by_one_statement_runs_without_a_transaction():
    """BEGIN and COMMIT are two round trips: a batch its `apply` writes with one statement (which
    PostgreSQL makes atomic by itself) goes without them; the others keep their transaction."""
    engine = FakeEngine()
    seen = []

    async def apply(conn, items):
        seen.append((list(items), conn.in_transaction, conn.autocommit))
        return list(items)

    commit = GroupCommit(engine, apply, in_flight=1, single_statement=lambda items: all(i > 0 for i in items))
    assert await commit.submit(1) == 1
    assert await commit.submit(-1) == -1
    assert seen == [([1], False, True), ([-1], True, False)]


async def test_separate_defers_items_to_the_next_batch():
    engine = FakeEngine()

    async def apply(conn, items):
        conn.transactions.append(list(items))
        return list(items)

    def one_per_letter(items):
        seen, now, later = set(), [], []
        for i, item in enumerate(items):
            (later if item[0] in seen else now).append(i)
            seen.add(item[0])
        return now, later

    commit = GroupCommit(engine, apply, in_flight=1, separate=one_per_letter)
    results = await _gather(commit, ["a1", "b1", "a2", "a3"])
    assert results == ["a1", "b1", "a2", "a3"]
    for transaction in engine.transactions:
        letters = [item[0] for item in transaction]
        assert len(letters) == len(set(letters))


async def test_close_waits_for_the_transactions_in_flight():
    engine = FakeEngine()
    engine.gate = asyncio.Event()
    done = []

    async def apply(conn, items):
        done.extend(items)
        return list(items)

    commit = GroupCommit(engine, apply)
    pending = asyncio.ensure_future(commit.submit(1))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(commit.close())
    await asyncio.sleep(0)
    assert not closing.done()
    engine.gate.set()
    await asyncio.wait_for(closing, timeout=5)
    assert done == [1] and await pending == 1


@pytest.mark.parametrize("in_flight", [1, 2, 4])
async def test_never_more_transactions_in_flight_than_allowed(in_flight):
    engine = FakeEngine()
    running = peak = 0

    async def apply(conn, items):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        return list(items)

    commit = GroupCommit(engine, apply, max_batch=3, in_flight=in_flight)
    assert await _gather(commit, range(40)) == list(range(40))
    assert peak <= in_flight
