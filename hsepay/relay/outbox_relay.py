"""The outbox relay: moves committed outbox rows to Kafka, in id order, at least once.

One relay per service database is active at a time: it holds a PostgreSQL session advisory lock
on a dedicated connection, and the others stand by, retrying the lock every second. If the active
process dies (even `kill -9`), PostgreSQL drops its connection and the lock with it, and a standby
takes over. The same connection LISTENs for the NOTIFY that every outbox write sends at commit, so
the relay wakes within milliseconds; a poll every `poll_interval` covers a missed notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass

import psycopg
from aiokafka.errors import KafkaError
from sqlalchemy import BigInteger, Table, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.config import RelaySettings
from hsepay.relay.kafka import BrokerConfig, ensure_topics, make_producer
from hsepay.relay.store import notify_channel
from hsepay.relay.timing import sleep_or_stop

__all__ = ["OutboxRelay", "RelayStats", "libpq_conninfo", "relay_lock_key"]

log = logging.getLogger(__name__)

PURGE_BATCH = 10_000
LOCK_CHECK_INTERVAL = 2.0


def _idempotence_hint(exc: KafkaError, broker: BrokerConfig) -> str:
    if broker.idempotence and type(exc).__name__ == "UnknownError":
        return (
            " (the broker may not support idempotent producers, as Tansu does not: set HSEPAY_KAFKA_IDEMPOTENCE=false)"
        )
    return ""


def relay_lock_key(outbox: Table) -> str:
    return f"hsepay.relay.{outbox.name}"


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """A plain libpq URI for psycopg from the SQLAlchemy form (drops the +psycopg driver)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    errors: int = 0
    active: bool = False
    last_error: str | None = None


class OutboxRelay:
    def __init__(
        self,
        *,
        name: str,
        engine: AsyncEngine,
        db_url: str,
        outbox: Table,
        broker: BrokerConfig,
        topics: tuple[str, ...],
        settings: RelaySettings,
    ) -> None:
        self.name = name
        self.engine = engine
        self.db_url = db_url
        self.outbox = outbox
        self.broker = broker
        self.topics = topics
        self.settings = settings
        self.stats = RelayStats()
        self._autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._last_purge = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Stand by until this process holds the relay lock, then relay until `stop` is set.

        Never returns early: every failure is logged, counted and retried with backoff.
        """
        backoff = 0.1
        while not stop.is_set():
            try:
                await self._stand_by_then_lead(stop)
                backoff = 0.1
                continue
            except (psycopg.OperationalError, OperationalError, InterfaceError, OSError) as exc:
                self.stats.last_error = f"database: {exc}"
            except KafkaError as exc:
                self.stats.last_error = f"broker: {exc!r}{_idempotence_hint(exc, self.broker)}"
            except Exception as exc:  # a bug must not silently end the relay task
                log.exception("%s relay failed", self.name)
                self.stats.last_error = repr(exc)
            self.stats.active = False
            self.stats.errors += 1
            log.warning("%s relay stopped relaying (%s); retrying in %.1fs", self.name, self.stats.last_error, backoff)
            await sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, self.settings.max_backoff)

    async def _stand_by_then_lead(self, stop: asyncio.Event) -> None:
        conninfo = libpq_conninfo(self.db_url)
        app_name = f"hsepay-relay-{self.name} {socket.gethostname()}:{os.getpid()}"
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, application_name=app_name[:63]
        ) as lock_conn:
            while not stop.is_set():
                cur = await lock_conn.execute(
                    "SELECT pg_try_advisory_lock(hashtext(%s))", (relay_lock_key(self.outbox),)
                )
                if (await cur.fetchone())[0]:
                    break
                await sleep_or_stop(stop, self.settings.standby_interval)
            else:
                return
            log.info("%s relay is active (%s)", self.name, app_name)
            self.stats.active = True
            try:
                await lock_conn.execute(f'LISTEN "{notify_channel(self.outbox)}"')
                await self._lead(stop, lock_conn)
            finally:
                self.stats.active = False

    async def _lead(self, stop: asyncio.Event, lock_conn: psycopg.AsyncConnection) -> None:
        await ensure_topics(self.broker, self.topics)
        producer = make_producer(self.broker)
        backoff = 0.1
        checked = time.monotonic()
        try:
            await producer.start()  # inside the try: a failed start must still be stopped (it leaks tasks)
            while not stop.is_set():
                try:
                    sent = await self.publish_batch(producer)
                    backoff = 0.1
                except KafkaError as exc:
                    self.stats.errors += 1
                    self.stats.last_error = f"broker: {exc!r}"
                    log.warning("%s relay: publish failed (%r); retrying in %.1fs", self.name, exc, backoff)
                    await sleep_or_stop(stop, backoff)
                    backoff = min(backoff * 2, self.settings.max_backoff)
                    # A restarted in-memory broker has lost its topics: create them again.
                    with contextlib.suppress(KafkaError, OSError):
                        await ensure_topics(self.broker, self.topics)
                    continue
                await self._purge_if_due()
                if time.monotonic() - checked > LOCK_CHECK_INTERVAL:
                    # Under constant load the relay never waits on the lock connection; make sure
                    # it still holds the lock (a dead connection raises and ends this turn).
                    await lock_conn.execute("SELECT 1")
                    checked = time.monotonic()
                if sent < self.settings.batch_size:
                    await self._wait_for_work(stop, lock_conn)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()

    def _autocommit(self):
        """A connection for single statements: no BEGIN/ROLLBACK round trips around them (they are
        on the path of every message's latency). Shares the engine's pool."""
        return self._autocommit_engine.connect()

    async def publish_batch(self, producer) -> int:
        """Publish the oldest pending rows, wait for every ack, mark the acked prefix sent."""
        outbox = self.outbox
        async with self._autocommit() as conn:
            rows = (
                await conn.execute(
                    select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.value, outbox.c.headers)
                    .where(outbox.c.sent_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self.settings.batch_size)
                )
            ).all()
        if not rows:
            return 0
        futures = []
        for row in rows:
            headers = [(name, value.encode()) for name, value in row.headers.items()]
            futures.append(await producer.send(row.topic, value=row.value, key=row.key.encode(), headers=headers))
        results = await asyncio.gather(*futures, return_exceptions=True)
        # Only the prefix before the first failure counts as sent, so that a retry re-sends rows in
        # their original order (per-key order survives; duplicates are absorbed by the inbox).
        acked: list[int] = []
        failure: BaseException | None = None
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, BaseException):
                failure = result
                break
            acked.append(row.id)
        if acked:
            async with self._autocommit() as conn:
                await conn.execute(
                    update(outbox)
                    .where(outbox.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger))))
                    .values(sent_at=func.now()),
                    {"ids": acked},
                )
            self.stats.published += len(acked)
            self.stats.batches += 1
        if failure is not None:
            raise failure if isinstance(failure, KafkaError) else KafkaError(repr(failure))
        return len(rows)

    async def _wait_for_work(self, stop: asyncio.Event, lock_conn: psycopg.AsyncConnection) -> None:
        if stop.is_set():
            return
        # Returns on the first NOTIFY or after poll_interval; a dead lock connection raises here,
        # which ends this relay's turn (its lock is gone with the connection).
        async for _ in lock_conn.notifies(timeout=self.settings.poll_interval, stop_after=1):
            pass

    async def _purge_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_purge < self.settings.purge_interval:
            return
        self._last_purge = now
        outbox = self.outbox
        expired = (
            select(outbox.c.id)
            .where(outbox.c.sent_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, self.settings.retention))
            .limit(PURGE_BATCH)
            .scalar_subquery()
        )
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(outbox).where(outbox.c.id.in_(expired)))
        if result.rowcount:
            log.info("%s relay purged %d sent outbox rows", self.name, result.rowcount)
