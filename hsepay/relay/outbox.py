"""The outbox relay: moves committed outbox rows to Kafka, in id order, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.config import RelaySettings
from hsepay.connection_policy import ConnectionPolicy
from hsepay.periodic import Periodic
from hsepay.relay.broker import BrokerConfig, ensure_topics, make_producer
from hsepay.relay.leadership import Leadership
from hsepay.relay.publisher import Producer, Publisher, PublishFailed, Record
from hsepay.relay.signing import SIGNATURE_HEADER, EventSigner
from hsepay.relay.store import OutboxStore, PostgresOutbox
from hsepay.resilience import Backoff, describe, supervise

__all__ = ["OutboxRelay", "RelayStats"]

log = logging.getLogger(__name__)

PURGE_BATCH = 10_000


@dataclass
class RelayStats:
    published: int = 0
    batches: int = 0
    errors: int = 0
    producers: int = 0
    active: bool = False
    standing_by: bool = False
    last_error: str | None = None


class OutboxRelay:
    """Publishes every committed outbox row of one service database to its topic, in id order.

    Guarantees:
    - at least once: a row is marked sent only after the broker acknowledged it (acks=all) and
      every row before it; after a failure the unacknowledged rest is re-sent in id order, so
      per-key order holds and copies are absorbed by the consumers' inbox;
    - one publisher per database: only the holder of the outbox's `Leadership` publishes, and it
      confirms its lock session before every batch; the others stand by and take over when the
      holder dies or goes silent for the lease;
    - no stuck producer: a failed batch replaces the producer (see `Publisher`);
    - wakes on the NOTIFY of each committed write, with a poll as a fallback.
    It never publishes a row that was rolled back (it reads committed rows only), and never marks
    a row sent that the broker did not acknowledge.
    """

    def __init__(
        self,
        *,
        name: str,
        engine: AsyncEngine,
        db_url: str,
        outbox: Table,
        db_policy: ConnectionPolicy | None = None,
        broker: BrokerConfig,
        topics: tuple[str, ...],
        settings: RelaySettings,
        max_backoff: float = 10.0,
        producer_factory: Callable[[], Producer] | None = None,
        store: OutboxStore | None = None,
        signer: EventSigner | None = None,
    ) -> None:
        self.name = name
        self.engine = engine
        self.db_url = db_url
        self.db_policy = db_policy or ConnectionPolicy()
        self.outbox = outbox
        self.broker = broker
        self.topics = topics
        self.settings = settings
        self.max_backoff = max_backoff
        self.producer_factory = producer_factory or (lambda: make_producer(broker))
        self.store: OutboxStore = store or PostgresOutbox(engine, outbox)
        self.signer = signer
        """Signs each record as it is published (None: unsigned, HSEPAY_EVENTS_ALLOW_UNSIGNED only)."""
        self.stats = RelayStats()

    async def relay_forever(self, stop: asyncio.Event) -> None:
        """Stand by until this process leads, then relay until `stop`; every failure is retried."""
        await supervise(f"{self.name} relay", lambda: self._turn(stop), stop, Backoff(self.max_backoff), self._failed)

    def _record(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = describe(exc)

    def _failed(self, exc: BaseException) -> None:
        self._record(exc)
        self.stats.active = self.stats.standing_by = False

    def leadership(self) -> Leadership:
        return Leadership(
            db_url=self.db_url,
            policy=self.db_policy,
            outbox=self.outbox,
            name=self.name,
            lease=self.settings.lease,
            standby_interval=self.settings.standby_interval,
        )

    async def _turn(self, stop: asyncio.Event) -> None:
        async with self.leadership() as lead:
            self.stats.standing_by = True
            acquired = await lead.acquire(stop)
            self.stats.standing_by = False
            if not acquired:
                return
            self.stats.active = True
            try:
                await self._lead(stop, lead)
            finally:
                self.stats.active = False

    async def _lead(self, stop: asyncio.Event, lead: Leadership) -> None:
        await self._recreate_lost_topics()
        publisher = Publisher(self.producer_factory, delivery_timeout=self.broker.delivery_timeout)
        backoff = Backoff(self.max_backoff)
        try:
            async with lead.heartbeat():  # a slow broker must not cost the lock (idle session timeout)
                await publisher.warm_up()
            while not stop.is_set():
                try:
                    sent = await self.publish_batch(publisher, lead)
                    backoff.reset()
                except PublishFailed as exc:
                    self._record(exc.cause)
                    log.warning(
                        "%s relay: publish failed (%s) at a message for topic %s; re-sending the rest in %.1fs",
                        self.name,
                        describe(exc.cause),
                        exc.topic or "?",
                        backoff.delay,
                    )
                    if not await backoff.wait(stop):
                        return
                    await self._recreate_lost_topics()
                    continue
                finally:
                    self.stats.producers = publisher.producers_started
                if sent < self.settings.batch_size:
                    await lead.wait_for_work(self.settings.poll_interval)
        finally:
            await publisher.close()

    async def publish_batch(self, publisher: Publisher, lead: Leadership | None = None) -> int:
        """Publish the oldest pending rows; mark the acknowledged prefix sent; return rows read.

        With a `lead`, rows are read through its lock session: a relay that lost its lock fails
        that read (LeadershipLost) and never publishes even one more batch.
        """
        store = self.store if lead is None else self.store.on(lead.conn)
        if lead is None:
            rows = await store.pending(self.settings.batch_size)
        else:
            rows = await lead.confirming(store.pending(self.settings.batch_size))
        if not rows:
            return 0
        records = [self._record_of(topic, key, value, headers) for _, topic, key, value, headers in rows]
        failure: PublishFailed | None = None
        try:
            async with lead.heartbeat() if lead is not None else contextlib.nullcontext():
                acked = await publisher.publish(records)
        except PublishFailed as exc:
            acked, failure = exc.acked, exc
        if acked:
            await store.mark_sent([row[0] for row in rows[:acked]])
            self.stats.published += acked
            self.stats.batches += 1
        if failure is not None:
            raise failure
        return len(rows)

    def _record_of(self, topic: str, key: str, value: bytes, headers: dict[str, str]) -> Record:
        raw_key = key.encode()
        pairs = [(k, v.encode()) for k, v in headers.items() if k != SIGNATURE_HEADER]
        if self.signer is not None:  # signed at each publish: the time is when it went out
            pairs.append((SIGNATURE_HEADER, self.signer.sign(topic, raw_key, value, headers).encode()))
        return Record(topic, raw_key, value, pairs)

    async def _recreate_lost_topics(self) -> None:
        """Create missing topics (best effort): at the start, and after a failure, since a restarted
        in-memory broker has lost its topics. A cluster failing over may not answer: the publish that
        follows says whether the topics are there."""
        try:
            await ensure_topics(self.broker, self.topics)
        except Exception as exc:
            log.info("%s relay: topics not checked (%s)", self.name, describe(exc))

    def purge_job(self) -> Periodic:
        """Forget rows sent longer than the retention ago, every purge interval, while this relay leads."""

        async def purge() -> int:
            if not self.stats.active:
                return 0  # the active relay purges; a standby would only contend for the same rows
            return await self.store.purge_sent(self.settings.retention, PURGE_BATCH)

        return Periodic(f"{self.name} outbox purge", self.settings.purge_interval, purge, "purged %d sent rows")
