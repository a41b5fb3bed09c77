"""Which process relays an outbox: the holder of a PostgreSQL session advisory lock, with a lease.

The lock lives as long as the holder's database session, on a connection of its own. PostgreSQL
ends that session, and so releases the lock, when the holder dies (`kill -9` closes its socket)
and also when the holder goes silent for `lease` seconds (`idle_session_timeout`, PostgreSQL ≥ 14):
a frozen, paused or cut-off holder loses the lock without anyone's help, and a standby takes over.
The holder confirms its session before every batch it publishes, so once it has lost the lock it
never publishes again; while a batch waits for its acks, a heartbeat keeps the session alive.

The same connection LISTENs for the NOTIFY that every outbox write sends at commit. It follows the
database connection policy (hsepay.connections) like every other: a silent server is found out by
the holder within the check interval, and by the kernel within HSEPAY_DB_DEAD_AFTER even while idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import psycopg
from sqlalchemy import Table

from hsepay.connection_policy import ConnectionPolicy
from hsepay.connections import WatchedConnection
from hsepay.db import connect, server_of
from hsepay.relay.store import notify_channel
from hsepay.resilience import sleep_or_stop

__all__ = ["Leadership", "LeadershipLost", "relay_lock_key"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeadershipLost(psycopg.OperationalError):
    """The session that held the relay lock is gone; so is the lock."""


def relay_lock_key(outbox: Table) -> str:
    return f"hsepay.relay.{outbox.name}"


def holder_name(service: str) -> str:
    """The application_name of a relay's lock session: `hsepay outbox status` shows it."""
    return f"hsepay-relay-{service} {socket.gethostname()}:{os.getpid()}"[:63]


class Leadership:
    def __init__(
        self,
        *,
        db_url: str,
        outbox: Table,
        name: str,
        lease: float,
        standby_interval: float,
        policy: ConnectionPolicy | None = None,
    ) -> None:
        self.db_url = db_url
        self.policy = policy or ConnectionPolicy()
        self.key = relay_lock_key(outbox)
        self.channel = notify_channel(outbox)
        self.name = name
        self.lease = lease
        self.standby_interval = standby_interval
        self.application_name = holder_name(name)
        self._conn: WatchedConnection | None = None

    @property
    def check_interval(self) -> float:
        """How often the holder must show life to keep its session: well inside the lease."""
        return self.lease / 3

    async def __aenter__(self) -> Leadership:
        # The same connect() as the engines: same hosts, same read-write session, same primary watch.
        self._conn = await connect(
            self.db_url,
            watch=self.name,
            autocommit=True,
            application_name=self.application_name,
            policy=self.policy,
        )
        try:
            await self._refuse_read_only()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _refuse_read_only(self) -> None:
        """A lock taken on a standby excludes no relay on the primary: two would publish at once.
        libpq's read-write check cannot see through a proxy (HAProxy may still route to a primary
        Patroni is demoting), so the session asks the server itself."""
        cur = await self.conn.execute("SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool")
        if (await cur.fetchone())[0]:
            raise psycopg.errors.ReadOnlySqlTransaction(
                f"{self.name} relay: {server_of(self.conn)} is read-only (a standby, or a read-only database): "
                "no relay lock there"
            )

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    @property
    def conn(self) -> WatchedConnection:
        if self._conn is None:
            raise LeadershipLost("not connected")
        return self._conn

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Stand by until this session holds the lock (True), or until `stop` (False)."""
        while not stop.is_set():
            cur = await self.conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.key,))
            if (await cur.fetchone())[0]:
                await self._arm_lease()
                await self.conn.execute(f'LISTEN "{self.channel}"')
                log.info("%s relay is active (%s)", self.name, self.application_name)
                return True
            await sleep_or_stop(stop, self.standby_interval)
        return False

    async def _arm_lease(self) -> None:
        try:
            await self.conn.execute(f"SET idle_session_timeout = {int(self.lease * 1000)}")
        except psycopg.errors.UndefinedObject:
            log.warning(
                "%s relay: PostgreSQL < 14 has no idle_session_timeout; a frozen relay keeps its lock "
                "until its connection drops",
                self.name,
            )

    async def confirm(self) -> None:
        """Prove the session (and so the lock) is still ours; raise LeadershipLost otherwise."""
        await self.confirming(self.conn.execute("SELECT 1"))

    async def confirming(self, statement: Awaitable[T]) -> T:
        """Run a statement on the lock session: its success proves the lock is still ours, a dead
        (or silent, past the check interval) session raises LeadershipLost. A silent session is cut,
        not cancelled: psycopg would spend up to 10 s trying to cancel the query through it."""
        try:
            with self.conn.deadline_in(self.check_interval):
                return await statement
        except (psycopg.Error, TimeoutError) as exc:
            raise LeadershipLost(f"{self.name} relay lost its lock session: {exc!r}") from exc

    @contextlib.asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[None]:
        """Keep the session alive while the holder is busy elsewhere (waiting for acks)."""

        done = asyncio.Event()

        async def beat() -> None:
            # Never cancelled mid-statement (that would break the connection): it stops between beats.
            while await sleep_or_stop(done, self.check_interval):
                with contextlib.suppress(psycopg.Error):
                    await self.conn.execute("SELECT 1")

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            done.set()
            await task

    async def wait_for_work(self, timeout: float) -> None:
        """Return on the first NOTIFY or after `timeout`; a dead session raises here."""
        async for _ in self.conn.notifies(timeout=min(timeout, self.check_interval), stop_after=1):
            pass
