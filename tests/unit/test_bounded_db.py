"""The APIs' liveness monitor and breaker: a wait without an answer is a question, not a verdict; a
database that answers nobody trips the breaker, and requests are answered at once until a probe
gets an answer; an error the database sends back trips nothing."""

from __future__ import annotations

import asyncio
import time
import types

import psycopg
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from hsepay.bounded_db import BoundedDatabase, is_no_primary, is_silence
from hsepay.connections import ConnectionCut, DeadlinePassed
from hsepay.resilience import Unavailable


class Connection:
    async def get_raw_connection(self):
        return types.SimpleNamespace(driver_connection=None)

    async def close(self) -> None:
        return None


class Engine:
    """connect() completes only while `answering` is set."""

    def __init__(self) -> None:
        self.answering = asyncio.Event()
        self.writable = True

    async def connect(self) -> Connection:
        await self.answering.wait()
        return Connection()


class Database(BoundedDatabase):
    """The probe asks the fake engine instead of a server."""

    async def ask_server(self) -> bool:
        async with asyncio.timeout(self.probe_within):
            await self.engine.answering.wait()
        return self.engine.writable


def database(engine: Engine) -> Database:
    return Database(engine, timeout=5.0, silence=0.05, probe_every=0.01)


async def test_no_connection_and_no_answer_to_the_probe_trips_the_breaker_until_an_answer():
    engine = Engine()
    db = database(engine)
    with pytest.raises(DeadlinePassed):
        async with db.unit():
            pass
    assert db.silent_since is not None and db.trips == 1
    started = time.monotonic()
    with pytest.raises(Unavailable, match="has not answered"):
        async with db.unit():
            pass
    assert time.monotonic() - started < 0.05  # at once: no connection was even asked for
    engine.answering.set()
    while db.silent_since is not None:  # the probe gets its answer
        await asyncio.sleep(0.01)
    async with db.unit() as conn:
        assert isinstance(conn, Connection)
    await db.close()


async def test_a_slow_wait_is_not_silence_when_answers_flow_elsewhere():
    engine = Engine()
    db = database(engine)
    loop = asyncio.get_running_loop()
    since = loop.time()
    db.answered()  # another connection got an answer after the wait began
    assert await db.overdue(since) is True
    assert db.probes == 0  # nobody had to ask the server


async def test_a_slow_wait_with_no_answers_elsewhere_asks_the_server_once():
    engine = Engine()
    engine.answering.set()
    db = database(engine)
    since = asyncio.get_running_loop().time()
    verdicts = await asyncio.gather(db.overdue(since), db.overdue(since), db.overdue(since))
    assert verdicts == [True, True, True] and db.probes == 1 and db.silent_since is None


def test_only_silence_counts_not_an_error_the_database_sent():
    assert is_silence(ConnectionCut("no answer"))
    late = ConnectionCut("deadline")
    late.silent = False
    assert not is_silence(late)
    assert is_silence(OperationalError("connect", {}, psycopg.OperationalError("Connection refused")))
    assert not is_silence(OperationalError("UPDATE", {}, psycopg.errors.LockNotAvailable("lock timeout")))
    assert not is_silence(IntegrityError("INSERT", {}, Exception("duplicate key")))
    wrapped = Unavailable("outcome unknown")
    wrapped.__cause__ = ConnectionCut("no answer")
    assert is_silence(wrapped)


def read_only_answer() -> OperationalError:
    return OperationalError(
        "INSERT", {}, psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
    )


async def test_a_server_that_cannot_write_trips_the_breaker_until_a_probe_finds_a_writable_one():
    """Issue 22: behind HAProxy a read-only answer (a demoted primary) tripped nothing, and every
    request went on to wait for a connection of its own (1.8 s 503s)."""
    engine = Engine()
    engine.answering.set()
    engine.writable = False  # the server behind the proxy answers, but is a standby
    db = database(engine)
    with pytest.raises(OperationalError):
        async with db.unit():
            raise read_only_answer()
    assert db.silent_since is not None and db.no_primary and db.trips == 1
    with pytest.raises(Unavailable, match="no writable database primary"):
        async with db.unit():
            pass
    probes = db.probes
    while db.probes < probes + 3:  # answered, but read-only: the breaker stays open
        await asyncio.sleep(0.01)
    assert db.silent_since is not None and db.writable is False
    engine.writable = True  # the new primary
    while db.silent_since is not None:
        await asyncio.sleep(0.01)
    async with db.unit() as conn:
        assert isinstance(conn, Connection)
    await db.close()


async def test_work_waiting_for_a_connection_gives_up_when_the_breaker_opens():
    engine = Engine()  # no connection comes (HAProxy holding it while its server is gone)
    db = Database(engine, timeout=5.0, silence=1.0, probe_every=0.01)
    loop = asyncio.get_running_loop()

    async def waiting() -> float:
        started = loop.time()
        with pytest.raises(DeadlinePassed):
            async with db.unit():
                pass
        return loop.time() - started

    waiter = asyncio.create_task(waiting())
    await asyncio.sleep(0.05)
    db._trip_on(read_only_answer())  # another request's statement met the demoted primary
    assert await waiter < 0.5  # not the 3 s connect bound (2 * silence + probe_within)
    engine.answering.set()
    await db.close()


def test_a_server_that_cannot_write_is_no_primary_wherever_it_is_in_the_causes():
    assert is_no_primary(read_only_answer())
    assert is_no_primary(psycopg.errors.AdminShutdown("terminating connection due to administrator command"))
    assert is_no_primary(psycopg.errors.CannotConnectNow("the database system is starting up"))
    unknown = Unavailable("outcome unknown")
    unknown.__cause__ = psycopg.errors.AdminShutdown("terminating connection")
    assert is_no_primary(unknown)
    assert not is_no_primary(OperationalError("UPDATE", {}, psycopg.errors.LockNotAvailable("lock timeout")))
    assert not is_no_primary(ConnectionCut("no answer"))
