"""Database connections that never wait forever: a dead or silent database is detected, not waited out.

Three layers, because each catches what the others cannot:
- the kernel (TCP keepalive, `tcp_user_timeout`) ends a connection whose peer vanished — packets
  dropped, a host gone — on an idle connection too, within `dead_after` seconds; the server is
  asked for the same on its side, so it ends the sessions of clients that vanished;
- the server ends what runs too long or holds locks idle (`statement_timeout`, `lock_timeout`,
  `idle_in_transaction_session_timeout`). They are sent by the client as startup options, so they
  hold against any server, whatever its own configuration says;
- the client bounds every wait for an answer (`WatchedConnection`): a peer whose TCP stack is alive
  but which never answers (a proxy or a middlebox holding the connection, a frozen server) is cut
  after `statement_timeout + 1` seconds, and a unit of work under `bounded()` is cut at its deadline.

Cutting means `shutdown(2)` of the socket, not a task cancellation: psycopg answers a cancellation
by asking the server to cancel the query over a new connection and waiting up to 10 s for it
(measured: 11.0 s through a silent proxy), while a shut socket fails the pending wait at once and
leaves a broken connection that SQLAlchemy's pool discards.

(Just over 300 lines: the watched connection, the bounded checkout and the commit whose outcome may
be unknown share one notion of "cut" and one deadline; apart, each would have to re-derive them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from hsepay.connection_policy import ConnectionPolicy
from hsepay.resilience import OutcomeUnknown

__all__ = [
    "ClientSideError",
    "ConnectionCut",
    "ConnectionPolicy",
    "DeadlinePassed",
    "LivenessMonitor",
    "WatchedConnection",
    "bounded",
    "bounded_transaction",
    "commit_or_unknown",
    "transaction_on",
]


class ConnectionCut(psycopg.OperationalError):
    """The server did not answer in time; the connection was dropped (SQLAlchemy's pool discards it)."""

    silent: bool = True
    """No answer within a silence bound (rather than a unit of work past its deadline)."""


class ClientSideError(psycopg.ProgrammingError):
    """libpq refused to send a statement (more than 65535 bind parameters, say): a fault of the
    request, not of the server, and the connection is still good. psycopg reports it as an
    OperationalError without a SQLSTATE — which is how a lost connection looks too — so it would
    otherwise read as "database unavailable" (503 and "lost primary" instead of a bug's 500)."""


class DeadlinePassed(TimeoutError):
    """A unit of work's deadline passed before it could start (no connection in time); nothing was done."""


class LivenessMonitor(Protocol):
    """Decides whether a database that is slow to answer one connection is alive (see hsepay.bounded_db)."""

    def answered(self) -> None:
        """Some connection just got an answer."""

    def overdue(self, since: float) -> asyncio.Future[bool]:
        """A wait begun at `since` has had no answer for its silence bound: is the database alive?"""


class WatchedConnection(psycopg.AsyncConnection):
    """A psycopg connection whose every wait for the server is bounded.

    - `answer_within` (from the policy): a wait that long means a dead connection: it is cut;
    - `deadline` (set by `bounded()`): the unit of work is over then: the connection is cut;
    - `silence` with a `monitor` (set by `bounded()` for the APIs): a wait that long is only a
      question — a statement may be waiting for a lock while the server is well — so the monitor
      decides: alive (answers flow elsewhere, or its probe got one) and the wait goes on, or silent
      and the connection is cut.
    Waits that carry their own timeout (`notifies(timeout=...)`) are left to it.
    """

    answer_within: float | None = None
    silence: float | None = None
    monitor: LivenessMonitor | None = None
    deadline: float | None = None
    """Loop time by which the current unit of work must be over."""
    _cut: ConnectionCut | None = None

    @classmethod
    async def connect(cls, *args: Any, answer_within: float | None = None, **kwargs: Any) -> WatchedConnection:  # type: ignore[override]
        conn = await super().connect(*args, **kwargs)
        conn.answer_within = answer_within
        return conn

    async def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if "timeout" in kwargs or (self.answer_within is None and self.deadline is None and self.silence is None):
            return await super().wait(gen, *args, **kwargs)
        watch = _Watch(self)
        try:
            result = await super().wait(gen, *args, **kwargs)
        except psycopg.OperationalError as exc:
            if self._cut is not None and not isinstance(exc, ConnectionCut):
                raise self._cut from exc
            if exc.sqlstate is None and self._still_good():
                raise ClientSideError(str(exc)) from exc
            raise
        finally:
            watch.stop()
        if self.monitor is not None:
            self.monitor.answered()
        return result

    def _still_good(self) -> bool:
        """libpq marks a connection bad as soon as it loses it; one still good after a failure
        without a SQLSTATE was never the server's doing."""
        return (
            self.pgconn.status == psycopg.pq.ConnStatus.OK
            and self.pgconn.transaction_status != psycopg.pq.TransactionStatus.UNKNOWN
        )

    def cut(self, reason: ConnectionCut) -> None:
        """Fail every pending and later operation on this connection at once (see the module docstring)."""
        if self._cut is not None:
            return
        self._cut = reason
        with contextlib.suppress(Exception):  # already closed or broken: nothing left to cut
            shut = socket.socket(fileno=os.dup(self.pgconn.socket))
            try:
                shut.shutdown(socket.SHUT_RDWR)
            finally:
                shut.close()

    @property
    def was_cut(self) -> bool:
        return self._cut is not None

    @contextlib.contextmanager
    def deadline_in(self, seconds: float) -> Iterator[None]:
        """Bound the waits of a block of work on this connection (a raw psycopg user's `bounded()`)."""
        previous, self.deadline = self.deadline, asyncio.get_running_loop().time() + seconds
        try:
            yield
        finally:
            self.deadline = previous


class _Watch:
    """The timers of one wait of a WatchedConnection (see its docstring)."""

    def __init__(self, conn: WatchedConnection) -> None:
        self.conn = conn
        self.loop = asyncio.get_running_loop()
        self.since = self.loop.time()
        self.done = False
        self.handles: list[asyncio.TimerHandle] = []
        if conn.answer_within is not None:
            self.handles.append(self.loop.call_later(conn.answer_within, self._dead, conn.answer_within))
        if conn.deadline is not None:
            self.handles.append(self.loop.call_at(conn.deadline, self._late))
        if conn.silence is not None:
            self.handles.append(self.loop.call_later(conn.silence, self._quiet))

    def stop(self) -> None:
        self.done = True
        for handle in self.handles:
            handle.cancel()

    def _dead(self, seconds: float) -> None:
        self.conn.cut(ConnectionCut(f"the database did not answer within {seconds:.3g}s; the connection was dropped"))

    def _late(self) -> None:
        late = ConnectionCut("the work's deadline passed before the database answered; the connection was dropped")
        late.silent = False
        self.conn.cut(late)

    def _quiet(self) -> None:
        if self.done:
            return
        if self.conn.monitor is None:
            self._dead(self.conn.silence or 0.0)
            return
        asked_at = self.loop.time()
        self.conn.monitor.overdue(self.since).add_done_callback(lambda verdict: self._judged(verdict, asked_at))

    def _judged(self, verdict: asyncio.Future[bool], asked_at: float) -> None:
        if self.done:
            return
        if verdict.cancelled() or not verdict.result():
            self._dead(self.loop.time() - self.since)
            return
        self.since = asked_at  # alive then: the next question only if this wait goes on as long again
        self.handles.append(self.loop.call_later(self.conn.silence or 0.0, self._quiet))


@contextlib.asynccontextmanager
async def bounded(
    engine: AsyncEngine,
    *,
    deadline: float,
    silence: float | None = None,
    monitor: LivenessMonitor | None = None,
    connect_within: float | None = None,
    give_up: asyncio.Future | None = None,
) -> AsyncIterator[AsyncConnection]:
    """A pooled connection for one unit of work that must be over by `deadline` (event loop time),
    whose every wait for an answer that lasts `silence` seconds asks `monitor` whether the database
    is alive (and without a monitor is cut).

    The checkout (a new connection to a silent server included) is cancelled after
    `connect_within` seconds or at the deadline — safe there, nothing was sent — and every later
    wait is cut at its bound: the work fails with an error that `resilience.is_unavailable`
    recognises, and the connection is discarded. A checkout still waiting when `give_up` is done
    (the database was found unavailable meanwhile) ends at once with `DeadlinePassed`.
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    if deadline <= now:
        raise DeadlinePassed("the deadline passed before a database connection was asked for")
    checkout_by = min(deadline, now + connect_within) if connect_within else deadline
    checkout = asyncio.ensure_future(engine.connect())
    try:
        waits = {checkout, give_up} if give_up is not None else {checkout}
        await asyncio.wait(waits, timeout=checkout_by - now, return_when=asyncio.FIRST_COMPLETED)
        if not checkout.done():
            if give_up is not None and give_up.done():
                raise DeadlinePassed("the database was found unavailable while this work waited for a connection")
            raise DeadlinePassed(f"no database connection within {checkout_by - now:.3g}s")
        conn = checkout.result()
    except BaseException:
        # The connection being made goes on (bounded by connect_timeout) and into the pool: on a box
        # so loaded that a first connection takes longer than a request may wait, cancelling each
        # attempt would never let one finish (readiness stayed red for 60 s at load 40).
        checkout.add_done_callback(_return_to_pool)
        raise
    driver: Any = None
    try:
        driver = (await conn.get_raw_connection()).driver_connection
        if isinstance(driver, WatchedConnection):
            driver.deadline, driver.silence, driver.monitor = deadline, silence, monitor
        yield conn
    finally:
        if isinstance(driver, WatchedConnection) and not driver.was_cut:
            # back to the pool unbounded; a cut one is discarded
            driver.deadline = driver.silence = driver.monitor = None
        await conn.close()


def _return_to_pool(checkout: asyncio.Future) -> None:
    if checkout.cancelled() or checkout.exception() is not None:
        return
    asyncio.ensure_future(checkout.result().close())


@contextlib.asynccontextmanager
async def bounded_transaction(engine: AsyncEngine, *, deadline: float, **bounds: Any) -> AsyncIterator[AsyncConnection]:
    """`bounded()` with a transaction, committed when the block ends; see `commit_or_unknown`."""
    async with bounded(engine, deadline=deadline, **bounds) as conn, transaction_on(conn):
        yield conn


@contextlib.asynccontextmanager
async def transaction_on(conn: AsyncConnection) -> AsyncIterator[AsyncConnection]:
    """A transaction on `conn`, committed when the block ends (see `commit_or_unknown`), rolled back
    if it raises."""
    transaction = await conn.begin()
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(Exception):  # a cut connection cannot roll back: the server does
            await transaction.rollback()
        raise
    await commit_or_unknown(transaction)


async def commit_or_unknown(transaction: AsyncTransaction) -> None:
    """Commit; a COMMIT that got no answer at all (the connection lost or cut while it was under
    way) raises `OutcomeUnknown`: it may have been applied. An error answer means it was not."""
    try:
        await transaction.commit()
    except Exception as exc:
        if no_answer(exc):
            raise OutcomeUnknown(
                "the database did not confirm the commit: the request may have taken effect; "
                "retry with the same Idempotency-Key to learn its outcome"
            ) from exc
        raise


def no_answer(exc: BaseException) -> bool:
    """The server never answered (connection lost or cut), as opposed to an error it sent back."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(cause, ClientSideError):  # refused before anything was sent
        return False
    return isinstance(cause, psycopg.Error) and getattr(cause, "sqlstate", None) is None
