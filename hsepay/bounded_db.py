"""The APIs' view of their database: every request's share of it bounded, a silent database found out
within about two seconds, and then answered at once.

Each unit of work (`hsepay.connections.bounded`) has a deadline, `timeout` (5 s): past it the
request is answered 503 and nothing was applied. A slow answer is not yet a silent database:
200 ms ± 100 ms of added latency makes an order's five round trips take ~1.5 s, and a statement
may wait for a row lock that fifty concurrent deposits to one account take in turn. So when one
wait has had no answer for `silence` seconds, this monitor asks whether the database is alive:
- yes at once if any connection of the process got an answer since that wait began (answers flow:
  the wait is a lock or a slow statement);
- otherwise it asks the server itself, on a connection of its own, and waits `probe_within` for
  the answer. None: the database is silent — the waiting connections are cut and the breaker trips.

The breaker: while it is open every request is answered 503 at once — no queueing behind
connections being cut, no connection attempt per request — and the probe asks again every
`probe_every` seconds; its first answer from a writable server closes it. Without it, requests
that arrived during the first detection waited for a second one in line, and a 30 s cut made one
refused connection per request (a 503 took up to 2.6 s then on this 2-core box; 0.8 s with the
breaker).

A server that answers "I cannot write" — read-only (a standby, a demoted primary), in recovery,
shutting down, not accepting connections yet (`resilience.is_read_only`) — trips it too: there is
no writable primary, and behind HAProxy the next connection would wait for one. Before this each
request found that out for itself: through HAProxy during a failover a connection waits while
HAProxy tries the server it still believes up, so the first 503s took the whole 1.8 s
`connect_within` (kill -9 of the leader, measured in tests/ha). The probe asks
`transaction_read_only`, which a standby and a read-only database answer "on": an answer closes
the breaker only from a writable server. Work waiting for a connection when the breaker opens
gives up at once (nothing was sent); work already under way runs its course (its commit's outcome
stays what the server says, or OutcomeUnknown).

(Just over 300 lines: the units of work, the monitor and the breaker are one state machine — a
failure seen by a unit trips the breaker, the breaker's probe is the monitor's — kept in one class.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay.connections import (
    ClientSideError,
    ConnectionCut,
    DeadlinePassed,
    WatchedConnection,
    bounded,
    transaction_on,
)
from hsepay.db import conninfo
from hsepay.resilience import Unavailable, describe, is_read_only

__all__ = ["BoundedDatabase", "is_no_primary", "is_silence"]

T = TypeVar("T")

log = logging.getLogger(__name__)


def is_silence(exc: BaseException) -> bool:
    """The failure says the database cannot be talked to — no answer in time, a connection refused,
    reset or timed out — as opposed to an error it answered (a lock or statement timeout, a
    constraint), or a unit of work that outran its own deadline."""
    seen: BaseException | None = exc
    while seen is not None:
        cause = seen.orig if isinstance(seen, DBAPIError) else seen
        if isinstance(cause, ConnectionCut):
            return cause.silent
        if isinstance(cause, ClientSideError):  # refused by libpq itself: the server was not asked
            return False
        if isinstance(cause, psycopg.OperationalError) and getattr(cause, "sqlstate", None) is None:
            return True
        seen = seen.__cause__
    return False


def is_no_primary(exc: BaseException) -> bool:
    """The server answered that it cannot take writes (read-only, recovering, shutting down):
    anywhere in the chain of causes, as an OutcomeUnknown carries its cause."""
    seen: BaseException | None = exc
    while seen is not None:
        if is_read_only(seen):
            return True
        seen = seen.__cause__
    return False


class BoundedDatabase:
    """An engine whose units of work are bounded, with a liveness monitor and a breaker (see above)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout: float = 5.0,
        silence: float = 0.6,
        probe_within: float | None = None,
        probe_every: float = 0.25,
    ) -> None:
        self.engine = engine
        self.timeout = timeout
        self.silence = silence
        self.probe_within = probe_within or silence
        self.probe_every = probe_every
        self.silent_since: float | None = None
        """Event loop time the breaker opened (None: closed)."""
        self.no_primary = False
        """The breaker opened because the server answered that it cannot write."""
        self.writable: bool | None = None
        """What the last answered probe said (None: no probe answered yet)."""
        self.trips = 0
        self.probes = 0
        self.last_answer = float("-inf")
        self._verdict: asyncio.Future[bool] | None = None
        self._probe_conn: WatchedConnection | None = None
        self._recovery: asyncio.Task | None = None
        self._opened: asyncio.Future[None] | None = None

    # --- units of work --------------------------------------------------------------------------

    def check(self) -> None:
        """Raise Unavailable at once while the database is known to be silent."""
        if self.silent_since is not None:
            quiet = asyncio.get_running_loop().time() - self.silent_since
            if self.no_primary:
                raise Unavailable(f"no writable database primary for {quiet:.1f}s; nothing was applied, retry later")
            raise Unavailable(f"the database has not answered for {quiet:.1f}s; nothing was applied, retry later")

    @contextlib.asynccontextmanager
    async def unit(self, deadline: float | None = None) -> AsyncIterator[AsyncConnection]:
        """A connection for one unit of work, over by `deadline` (default: `timeout` from now)."""
        self.check()
        loop = asyncio.get_running_loop()
        deadline = deadline if deadline is not None else loop.time() + self.timeout
        try:
            async with bounded(
                self.engine,
                deadline=deadline,
                silence=self.silence,
                monitor=self,
                connect_within=2 * self.silence + self.probe_within,
                give_up=self._opening(),
            ) as conn:
                yield conn
        except DeadlinePassed:
            # No connection in time: every pooled one busy, or a new one that does not answer.
            if not await self.overdue(loop.time() - 2 * self.silence):
                self._trip("no connection in time, and no answer to a probe")
            raise
        except Exception as exc:
            self._trip_on(exc)
            raise

    def connect(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self.unit()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction committed when the block ends (see `commit_or_unknown`)."""
        async with self.unit() as conn, transaction_on(conn):
            yield conn

    # --- the liveness monitor (hsepay.connections.LivenessMonitor) -------------------------------

    async def wait_for(self, work: Awaitable[T]) -> T:
        """Await `work` whose statements run in a task of their own (a group read: giving up on it
        cancels no query), under the bounds of a unit: 503 at once while the breaker is open; after
        `silence` without a result the monitor decides (a probe: no answer opens the breaker);
        `timeout` in all."""
        self.check()
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(work)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.silence)
            if not done:
                if not await self.overdue(started):
                    raise Unavailable("the database does not answer; retry later")
                done, _ = await asyncio.wait({task}, timeout=max(0.0, started + self.timeout - loop.time()))
                if not done:
                    raise Unavailable(f"the database did not answer within {self.timeout:g}s; retry later")
            try:
                result = task.result()
            except Exception as exc:
                self._trip_on(exc)
                raise
            self.answered()
            return result
        finally:
            if not task.done():
                task.cancel()

    def answered(self) -> None:
        self.last_answer = asyncio.get_running_loop().time()

    def overdue(self, since: float) -> asyncio.Future[bool]:
        """Alive? Yes if an answer came after `since`; otherwise the probe's verdict (one at a time)."""
        loop = asyncio.get_running_loop()
        if self.last_answer > since:
            alive = loop.create_future()
            alive.set_result(True)
            return alive
        if self.silent_since is not None:
            silent = loop.create_future()
            silent.set_result(False)
            return silent
        if self._verdict is None or self._verdict.done():
            self._verdict = loop.create_future()
            asyncio.ensure_future(self._judge(self._verdict))
        return self._verdict

    async def _judge(self, verdict: asyncio.Future[bool]) -> None:
        alive = await self._probe()
        if not alive:
            self._trip(f"no answer to a probe within {self.probe_within:g}s")
        if not verdict.done():
            verdict.set_result(alive)

    async def _probe(self) -> bool:
        """Did the server answer? (`writable` then says what it answered.)"""
        self.probes += 1
        try:
            self.writable = await self.ask_server()
        except Exception:
            await self._drop_probe_connection()
            return False
        if not self.writable:
            # Through HAProxy this connection stays on the server it reached: the next probe must
            # connect again to find the new primary.
            await self._drop_probe_connection()
        self.answered()
        return True

    async def _drop_probe_connection(self) -> None:
        conn, self._probe_conn = self._probe_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def ask_server(self) -> bool:
        """Whether the server takes writes (`transaction_read_only` off), asked on a connection of
        the monitor's own and answered within `probe_within`, or raise."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self._probe_conn is None or self._probe_conn.closed or self._probe_conn.broken:
            async with asyncio.timeout(self.probe_within):
                # The roles' own conninfo: on a URL naming several hosts, libpq goes to the writable
                # primary (target_session_attrs=read-write), so a standby's answer never says "alive".
                self._probe_conn = await WatchedConnection.connect(
                    conninfo(
                        self.engine.url.render_as_string(hide_password=False),
                        application_name="hsepay-probe",
                        connect_timeout=2,
                    ),
                    autocommit=True,
                )
        with self._probe_conn.deadline_in(self.probe_within - (loop.time() - started)):
            # "on" in a hot standby (in recovery) and where default_transaction_read_only is set.
            row = await (await self._probe_conn.execute("SHOW transaction_read_only")).fetchone()
        return row is not None and row[0] == "off"

    # --- the breaker ------------------------------------------------------------------------------

    def _trip_on(self, exc: BaseException) -> None:
        """Open the breaker if `exc` says the database is silent or has no writable primary."""
        if is_silence(exc):
            self._trip(describe(exc))
        elif is_no_primary(exc):
            self._trip(describe(exc), no_primary=True)

    def _opening(self) -> asyncio.Future[None]:
        """Done when the breaker next opens (checkouts waiting then give up)."""
        loop = asyncio.get_running_loop()
        if self._opened is None or self._opened.done() or self._opened.get_loop() is not loop:
            self._opened = loop.create_future()
        return self._opened

    def _trip(self, why: str, *, no_primary: bool = False) -> None:
        if self.silent_since is not None:
            return
        self.silent_since = asyncio.get_running_loop().time()
        self.no_primary = no_primary
        self.trips += 1
        if no_primary:
            log.warning("no writable database primary (%s): answering 503 until one answers", why)
        else:
            log.warning("the database is silent (%s): answering 503 until it answers again", why)
        if self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        self._recovery = asyncio.ensure_future(self._wait_for_answer())

    async def _wait_for_answer(self) -> None:
        loop = asyncio.get_running_loop()
        while not (await self._probe() and self.writable):
            await asyncio.sleep(self.probe_every)
        quiet = loop.time() - (self.silent_since or loop.time())
        self.silent_since = None
        if self.no_primary:
            log.warning("a writable database primary answers again after %.1fs without one", quiet)
        else:
            log.warning("the database answers again after %.1fs of silence", quiet)

    async def close(self) -> None:
        """Stop the probes and close the monitor's connection (at shutdown)."""
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        if self._probe_conn is not None:
            with contextlib.suppress(Exception):
                await self._probe_conn.close()
