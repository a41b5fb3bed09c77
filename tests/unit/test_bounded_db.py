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

from hsepay.bounded_db import BoundedDatabase, is_silence
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

    async def connect(self) -> Connection:
        await self.answering.wait()
        return Connection()


class Database(BoundedDatabase):
    """The probe asks the fake engine instead of a server."""

    async def ask_server(self) -> None:
        async with asyncio.timeout(self.probe_within):
            await self.engine.answering.wait()


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
