"""Group commit against a fake engine: batching, per-item answers and refusals, the fallback to
one item per transaction, the database-unavailable case, deferral of a repeated key, and the
deadlines of issue 22 (a request answered 503 never takes effect later; the queue is bounded)."""

from __future__ import annotations

import asyncio
import types

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from hsepay.batching import GroupCommit as _GroupCommit
from hsepay.bounded_db import BoundedDatabase
from hsepay.resilience import OutcomeUnknown, Overloaded, Unavailable


class FakeTransaction:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    async def commit(self) -> None:
        if self.engine.commit_gate is not None:
            await self.engine.commit_gate.wait()
        if self.engine.commit_error is not None:
            raise self.engine.commit_error
        self.engine.committed.append(self.engine.transactions[-1] if self.engine.transactions else [])

    async def rollback(self) -> None:
        self.engine.rolled_back.append(self.engine.transactions[-1] if self.engine.transactions else [])


class FakeConnection:
    """What GroupCommit asks of a pooled connection (a driver connection that cannot be cut)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.transactions = engine.transactions
        self.autocommit = False
        self.in_transaction = False

    async def execution_options(self, isolation_level: str) -> FakeConnection:
        assert isolation_level == "AUTOCOMMIT"
        self.autocommit = True
        return self

    async def get_raw_connection(self):
        return types.SimpleNamespace(driver_connection=None)  # nothing to bound or cut

    async def begin(self) -> FakeTransaction:
        if self.engine.gate is not None:
            await self.engine.gate.wait()
        self.in_transaction = True
        return FakeTransaction(self.engine)

    async def close(self) -> None:
        return None


class FakeEngine:
    """engine.connect() and a transaction on it; records what each transaction held and committed."""

    def __init__(self) -> None:
        self.transactions: list[list] = []
        self.committed: list[list] = []
        self.rolled_back: list[list] = []
        self.gate: asyncio.Event | None = None
        self.commit_gate: asyncio.Event | None = None
        self.commit_error: BaseException | None = None

    async def connect(self) -> FakeConnection:
        return FakeConnection(self)


def GroupCommit(engine, apply, **kwargs) -> _GroupCommit:  # noqa: N802 - stands for the class
    return _GroupCommit(BoundedDatabase(engine), apply, **kwargs)


async def _gather(commit: _GroupCommit, items):
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


async def test_an_item_still_queued_at_its_deadline_is_answered_not_applied():
    engine = FakeEngine()
    engine.gate = asyncio.Event()  # the database never lets the first transaction begin

    async def apply(conn, items):
        conn.transactions.append(list(items))
        return list(items)

    commit = GroupCommit(engine, apply, in_flight=1, timeout=0.2)
    first = asyncio.ensure_future(commit.submit(1))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(commit.submit(2))
    with pytest.raises(Unavailable, match="nothing was applied"):
        await asyncio.wait_for(second, timeout=5)
    assert not first.done()  # the first one is in a transaction: its answer is the transaction's
    engine.gate.set()
    assert await asyncio.wait_for(first, timeout=5) == 1
    assert engine.committed == [[1]]  # 2 never reached the database
    assert commit.expired == 1


async def test_a_request_withdrawn_before_the_commit_rolls_the_batch_back_and_the_rest_goes_again():
    engine = FakeEngine()
    reached = asyncio.Event()
    release = asyncio.Event()

    async def apply(conn, items):
        conn.transactions.append(list(items))
        if len(conn.transactions) == 2:  # the batch of 1, 2, 3: wait here until 2 is withdrawn
            reached.set()
            await release.wait()
        return list(items)

    commit = GroupCommit(engine, apply, in_flight=1)
    zero = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(commit.submit(i)) for i in (1, 2, 3)]
    assert await zero == 0
    await asyncio.wait_for(reached.wait(), timeout=5)
    others[1].cancel()  # the request of item 2 went away (its client, or the request deadline)
    release.set()
    assert await asyncio.wait_for(asyncio.gather(others[0], others[2]), timeout=5) == [1, 3]
    assert [1, 2, 3] in engine.rolled_back
    assert sorted(i for batch in engine.committed for i in batch) == [0, 1, 3]  # 2 never committed


async def test_a_commit_without_an_answer_says_the_outcome_is_unknown():
    engine = FakeEngine()
    engine.commit_error = OperationalError("COMMIT", {}, psycopg.OperationalError("server closed the connection"))

    async def apply(conn, items):
        conn.transactions.append(list(items))
        return list(items)

    commit = GroupCommit(engine, apply)
    results = await _gather(commit, range(3))
    assert all(isinstance(r, OutcomeUnknown) for r in results), results
    assert "Idempotency-Key" in str(results[0])
    assert commit.unconfirmed == 3


async def test_an_error_answer_to_the_commit_is_not_an_unknown_outcome():
    engine = FakeEngine()
    refused = psycopg.errors.SerializationFailure("could not serialize access")
    engine.commit_error = OperationalError("COMMIT", {}, refused)

    async def apply(conn, items):
        conn.transactions.append(list(items))
        return list(items)

    results = await _gather(GroupCommit(engine, apply), range(2))
    assert all(isinstance(r, OperationalError) and not isinstance(r, OutcomeUnknown) for r in results)


async def test_a_full_queue_refuses_at_once():
    engine = FakeEngine()
    engine.gate = asyncio.Event()

    async def apply(conn, items):
        conn.transactions.append(list(items))
        return list(items)

    commit = GroupCommit(engine, apply, in_flight=1, max_queue=3)
    taken = asyncio.ensure_future(commit.submit(0))  # in the transaction, not in the queue
    await asyncio.sleep(0)
    queued = [asyncio.ensure_future(commit.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await commit.submit(4)
    assert commit.refused == 1
    engine.gate.set()
    assert await asyncio.wait_for(asyncio.gather(taken, *queued), timeout=5) == [0, 1, 2, 3]


async def test_a_one_statement_batch_that_gets_no_answer_may_have_taken_effect():
    """In autocommit the statement is its own COMMIT: lost without an answer, it may have been
    applied, so the answer says so (OutcomeUnknown), never a plain 'unavailable, nothing applied'."""
    engine = FakeEngine()

    async def apply(conn, items):
        assert conn.autocommit and not conn.in_transaction
        raise OperationalError("INSERT", {}, psycopg.OperationalError("server closed the connection"))

    commit = GroupCommit(engine, apply, single_statement=lambda items: True)
    results = await _gather(commit, [1, 2])
    assert all(isinstance(r, OutcomeUnknown) for r in results), results
    assert commit.unconfirmed == 2
