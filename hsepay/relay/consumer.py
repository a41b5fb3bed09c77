"""The inbox consumer: Kafka records in, one inbox transaction per fetched batch, offsets committed after."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay.config import ConsumerSettings
from hsepay.log_context import bound, saga_fields
from hsepay.periodic import Periodic, in_transaction
from hsepay.relay import hooks, inbox
from hsepay.relay.broker import BrokerConfig, assigned_lag, ensure_topics, make_consumer, partitions_of
from hsepay.relay.commits import OffsetCommitter
from hsepay.relay.inbound import (
    HandlerMap,
    Message,
    Poison,
    Ready,
    Verify,
    decode,
    first_of_each_event,
    message_from_record,
)
from hsepay.relay.membership import claim_instance_id
from hsepay.relay.pacing import FetchPacing
from hsepay.relay.store import pipeline
from hsepay.resilience import Backoff, describe, is_unavailable, supervise

__all__ = ["ConsumerStats", "InboxConsumer"]

log = logging.getLogger(__name__)
membership_log = logging.getLogger("hsepay.relay.membership")
"""Group membership lines: about the process, not about a message (saga lines carry the order's ids)."""

PURGE_BATCH = 10_000
FETCH_TIMEOUT_MS = 200
LAG_INTERVAL = 0.25


@dataclass
class ConsumerStats:
    processed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    errors: int = 0
    last_error: str | None = None
    joined: bool = False
    """The consumer is in its group and holds its (possibly empty) share of partitions."""
    partitions: int = 0
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    """(topic, partition) -> messages of an assigned partition not consumed yet (high watermark - position)."""


class _Membership(ConsumerRebalanceListener):
    def __init__(self, stats: ConsumerStats, name: str, instance_id: str | None) -> None:
        self.stats = stats
        self.name = name
        self.instance_id = instance_id

    async def on_partitions_revoked(self, revoked) -> None:
        self.stats.joined = False
        self.stats.lag = {}

    async def on_partitions_assigned(self, assigned) -> None:
        self.stats.joined = True
        self.stats.partitions = len(assigned)
        member = f"static member {self.instance_id}" if self.instance_id else "dynamic member"
        membership_log.info("%s consumer: %d partition(s) assigned (%s)", self.name, len(assigned), member)


class InboxConsumer:
    """Applies every event of its topics exactly once, in one database transaction with its effect.

    Guarantees:
    - at most once: each event id is recorded in the inbox in the transaction that applies it,
      so a redelivery is a primary-key hit, not a second effect;
    - at least once: an offset is committed only after the transaction that applied its batch
      committed, so a crash anywhere in between means redelivery;
    - nothing blocks and nothing disappears: a malformed message, or one whose handler fails
      `max_attempts` times, is quarantined with its bytes and error (`hsepay inbox retry`);
    - a database outage is waited out with backoff, without counting against any message;
    - with `settings.static_membership`, a consumer restarted after a crash gets its partitions
      back at once (hsepay.relay.membership).
    It never commits an offset ahead of the database, and never drops a message.
    """

    def __init__(
        self,
        *,
        name: str,
        engine: AsyncEngine,
        inbox_table: Table,
        handlers: HandlerMap,
        broker: BrokerConfig,
        topics: tuple[str, ...],
        group_id: str,
        settings: ConsumerSettings,
        max_backoff: float = 10.0,
        consumer_factory: Callable[..., object] = make_consumer,
        static_assignment: bool = False,
        verify: Verify | None = None,
    ) -> None:
        self.name = name
        self.engine = engine
        self.inbox = inbox_table
        self.handlers = handlers
        self.broker = broker
        self.topics = topics
        self.group_id = group_id
        self.settings = settings
        self.max_backoff = max_backoff
        self.consumer_factory = consumer_factory
        self.static_assignment = static_assignment
        """Read every partition without joining the group: for a process that is the group's only
        member (`hsepay up` on the embedded broker, where a group join takes 3-5 s). Offsets are
        still committed to the group. Never with other consumers of the same group running."""
        self.verify = verify
        """Each message's proof-of-origin check (hsepay.relay.signing), before anything is decoded."""
        self.stats = ConsumerStats()
        self.instance_id: str | None = None
        """The static group.instance.id this consumer joins with, once `consume_forever` claimed it."""
        self._lag_at = 0.0

    async def consume_forever(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; a failed session (broker, bug) starts a new consumer after a backoff."""
        slot = None
        if self.settings.static_membership and not self.static_assignment:
            slot = claim_instance_id(self.group_id, self.settings.instance_id)
            self.instance_id = slot.instance_id
        try:
            await supervise(
                f"{self.name} consumer", lambda: self._session(stop), stop, Backoff(self.max_backoff), self._failed
            )
        finally:
            if slot is not None:
                slot.release()

    def _failed(self, exc: BaseException) -> None:
        self.stats.errors += 1
        self.stats.joined = False
        self.stats.last_error = describe(exc)

    async def _session(self, stop: asyncio.Event) -> None:
        # Create the topics with the configured partitions before subscribing: some brokers
        # (Tansu) auto-create a topic on the first metadata request, with their own default. A
        # cluster that is failing over may not answer the admin request: the topics exist then,
        # and the consumer must go on rather than start over.
        try:
            await ensure_topics(self.broker, self.topics)
        except KafkaError as exc:
            log.info("%s consumer: topics not checked (%s)", self.name, describe(exc))
        if self.static_assignment:
            partitions = await partitions_of(self.broker, self.topics)
            consumer = self.consumer_factory(self.broker, self.topics, self.group_id, partitions=partitions)
        else:
            membership = _Membership(self.stats, self.name, self.instance_id)
            extra = {"group_instance_id": self.instance_id} if self.instance_id else {}
            consumer = self.consumer_factory(self.broker, self.topics, self.group_id, listener=membership, **extra)
        committer = OffsetCommitter(consumer, self.name)
        try:
            await consumer.start()
            if self.static_assignment:
                self.stats.joined, self.stats.partitions = True, len(consumer.assignment())
            pacing = FetchPacing(consumer, self.broker.fetch_max_wait_ms)
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=self.settings.batch_size)
                await pacing.after()
                if batch:
                    messages = [message_from_record(r) for records in batch.values() for r in records]
                    if not await self.apply(messages, stop):
                        return  # stopping before the batch was applied: leave the offsets alone
                    committer.add({tp: records[-1].offset + 1 for tp, records in batch.items()})
                committer.poll()
                await self._measure_lag(consumer)
            await committer.flush()
        finally:
            self.stats.joined = False
            committer.abandon()
            self.stats.lag = {}
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _measure_lag(self, consumer) -> None:
        """Lag per assigned partition from the consumer's own state (no request), a few times a second."""
        now = time.monotonic()
        if now - self._lag_at < LAG_INTERVAL:
            return
        self._lag_at = now
        self.stats.lag = {(tp.topic, tp.partition): n for tp, n in (await assigned_lag(consumer)).items()}

    # --- applying messages ------------------------------------------------------------------

    async def apply(self, messages: Sequence[Message], stop: asyncio.Event | None = None) -> bool:
        """Apply a batch exactly once; True when done, False if `stop` interrupted a retry."""
        stop = stop or asyncio.Event()
        items = first_of_each_event([decode(m, self.handlers, self.verify) for m in messages])
        backoff = Backoff(self.max_backoff)
        while True:
            try:
                await self._transaction(items)
                return True
            except Exception as exc:
                if not is_unavailable(exc):
                    log.warning("%s consumer: batch of %d failed (%s); applying one by one", self.name, len(items), exc)
                    break
                if not await self._wait_out(exc, backoff, stop):
                    return False
        for item in items:
            if not await self._apply_alone(item, stop):
                return False
        return True

    async def _apply_alone(self, item: Ready | Poison, stop: asyncio.Event) -> bool:
        """Apply one message; quarantine it after `max_attempts` failures of its own."""
        with bound(**saga_fields(item.message.headers)):  # every line about this message names its event
            return await self._apply_one(item, stop)

    async def _apply_one(self, item: Ready | Poison, stop: asyncio.Event) -> bool:
        attempts = 0
        outage = Backoff(self.max_backoff)
        retry = Backoff(self.max_backoff, initial=0.05)
        while True:
            try:
                await self._transaction([item], attempts=max(attempts, 1))
                return True
            except Exception as exc:
                if is_unavailable(exc):
                    if not await self._wait_out(exc, outage, stop):
                        return False
                    continue
                attempts += 1
                if attempts >= self.settings.max_attempts and isinstance(item, Ready):
                    error = f"failed {attempts} times: {exc!r}"
                    log.error("%s consumer: quarantining event %s: %s", self.name, item.event_id, error)
                    item = Poison(item.message, item.event_id, item.event_type, error)
                elif attempts >= self.settings.max_attempts:
                    raise  # recording poison itself fails: a bug, not the message's fault
                elif not await retry.wait(stop):
                    return False

    async def _transaction(self, items: Sequence[Ready | Poison], attempts: int = 1) -> None:
        with hooks.around_batch(self.name, items):
            async with self.engine.connect() as conn:
                # A batch without poison runs pipelined: BEGIN, the statements and COMMIT leave
                # together up to each result the batch must read (the inbox's fresh ids, the
                # handler's reads), so a payment's transaction is 3 round trips instead of 7.
                # Quarantining poison goes through SQLAlchemy, which cannot run in a pipeline.
                pipelined = not any(isinstance(item, Poison) for item in items)
                async with pipeline(conn) if pipelined else contextlib.nullcontext(), conn.begin():
                    applied = await inbox.apply_in(conn, self.inbox, self.name, items, attempts=attempts)
        refusals = {refusal.event_id: refusal.reason for refusal in applied.refused}
        for item in items:
            reason = item.error if isinstance(item, Poison) else refusals.get(item.event_id)
            if reason is not None:
                fields = saga_fields(item.message.headers)
                log.warning("%s consumer: quarantined %s: %s", self.name, item.event_type, reason, extra=fields)
            elif log.isEnabledFor(logging.DEBUG):
                fields = saga_fields(item.message.headers)
                log.debug("%s consumer: applied %s", self.name, item.event_type, extra=fields)
        self.stats.batches += 1
        self.stats.processed += applied.processed
        self.stats.duplicates += applied.duplicates
        self.stats.quarantined += applied.quarantined

    async def _wait_out(self, exc: BaseException, backoff: Backoff, stop: asyncio.Event) -> bool:
        self.stats.errors += 1
        self.stats.last_error = f"database: {describe(exc)}"
        log.warning(
            "%s consumer: database unavailable (%s); retrying in %.1fs", self.name, describe(exc), backoff.delay
        )
        return await backoff.wait(stop)

    def purge_job(self) -> Periodic:
        """Forget processed events older than the inbox retention, every purge interval."""

        async def purge(conn: AsyncConnection) -> int:
            retention = self.settings.inbox_retention
            return await inbox.purge_processed(conn, self.inbox, self.name, older_than=retention, limit=PURGE_BATCH)

        interval = self.settings.purge_interval
        return Periodic(f"{self.name} inbox purge", interval, in_transaction(self.engine, purge), "purged %d rows")
