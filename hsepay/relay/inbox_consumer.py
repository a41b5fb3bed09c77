"""The inbox consumer: applies each consumed event exactly once, in one transaction with its effect.

For a fetched batch, one transaction records every new `event_id` in the inbox (a duplicate is
skipped by the primary key), runs the service's handlers on the new events (which write their own
outbox rows), and commits; only then is the Kafka offset committed. A crash anywhere in between
means redelivery, and redelivery means a primary-key hit, not a second effect.

A message that cannot be applied is quarantined, never dropped and never blocking: a malformed one
at once, one whose handler keeps failing after `max_attempts`. Database outages are not the
message's fault: the batch is retried with backoff, without counting attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from aiokafka.errors import CommitFailedError, KafkaError
from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from hsepay.config import ConsumerSettings
from hsepay.relay.envelope import MalformedMessage, decode_envelope
from hsepay.relay.handlers import Consumed, EventHandler, HandlerMap
from hsepay.relay.kafka import BrokerConfig, ensure_topics, make_consumer
from hsepay.relay.store import INBOX_PROCESSED, INBOX_QUARANTINED
from hsepay.relay.timing import sleep_or_stop

__all__ = ["InboxConsumer", "ConsumerStats", "retry_quarantined"]

log = logging.getLogger(__name__)

INFRASTRUCTURE_ERRORS = (OperationalError, InterfaceError, psycopg.OperationalError, OSError, TimeoutError)
_SYNTHETIC_IDS = uuid.UUID("6f1c4a52-5a43-4d8e-9a64-1b9f4f0a7d21")
PURGE_INTERVAL = 60.0
COMMIT_TIMEOUT = 10.0
PURGE_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Message:
    """The parts of a Kafka record the inbox keeps (also rebuilt from a quarantined row)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Ready:
    message: Message
    event: Consumed[Any]
    handler: EventHandler[Any]


@dataclass(frozen=True, slots=True)
class Poison:
    message: Message
    event_id: uuid.UUID
    event_type: str | None
    error: str


@dataclass
class ConsumerStats:
    processed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    errors: int = 0
    last_error: str | None = None


def _text(raw: bytes | str) -> str:
    """Text PostgreSQL can store: valid UTF-8 without NUL characters."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text.replace("\x00", "\\0")


def message_from_record(record: Any) -> Message:
    headers = {_text(name): _text(value or b"") for name, value in (record.headers or ())}
    key = _text(record.key) if record.key is not None else None
    return Message(record.topic, record.partition, record.offset, key, record.value, headers)


def parse(message: Message, handlers: HandlerMap) -> Ready | Poison:
    """Validate a message against the envelope and its handler's schema, or say why it is poison."""
    try:
        envelope = decode_envelope(message.value)
    except MalformedMessage as exc:
        return Poison(message, _fallback_event_id(message), message.headers.get("event_type"), str(exc))
    handler = handlers.get(envelope.type)
    if handler is None:
        return Poison(message, envelope.event_id, envelope.type, f"no handler for event type {envelope.type!r}")
    try:
        data = msgspec.convert(envelope.data, handler.schema, strict=False)
    except msgspec.ValidationError as exc:
        return Poison(message, envelope.event_id, envelope.type, f"invalid {envelope.type} data: {exc}")
    event = Consumed(
        event_id=envelope.event_id,
        event_type=envelope.type,
        data=data,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
    )
    return Ready(message, event, handler)


def _fallback_event_id(message: Message) -> uuid.UUID:
    """An id for a message without a readable envelope, derived from where it sits and its bytes.

    Not its `event_id` header: a damaged copy quarantined under the real id would make the intact
    copy look like a duplicate. A redelivery of the same bytes gets the same id, so it is not
    quarantined twice.
    """
    digest = hashlib.sha256(message.value or b"").hexdigest()
    return uuid.uuid5(_SYNTHETIC_IDS, f"{message.topic}/{message.partition}/{message.offset}/{digest}")


def _row(consumer: str, message: Message, event_id: uuid.UUID, event_type: str | None) -> dict[str, Any]:
    return {
        "consumer": consumer,
        "event_id": event_id,
        "event_type": event_type,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
    }


class InboxConsumer:
    def __init__(
        self,
        *,
        name: str,
        engine: AsyncEngine,
        inbox: Table,
        handlers: HandlerMap,
        broker: BrokerConfig,
        topics: tuple[str, ...],
        group_id: str,
        settings: ConsumerSettings,
    ) -> None:
        self.name = name
        self.engine = engine
        self.inbox = inbox
        self.handlers = handlers
        self.broker = broker
        self.topics = topics
        self.group_id = group_id
        self.settings = settings
        self.stats = ConsumerStats()
        self._last_purge = time.monotonic()

    # --- the Kafka loop ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                await self._consume(stop)
                backoff = 0.1
                continue
            except KafkaError as exc:
                self.stats.last_error = f"broker: {exc!r}"
            except Exception as exc:  # a bug must not silently end the consumer task
                log.exception("%s consumer failed", self.name)
                self.stats.last_error = repr(exc)
            self.stats.errors += 1
            log.warning("%s consumer stopped (%s); restarting in %.1fs", self.name, self.stats.last_error, backoff)
            await sleep_or_stop(stop, backoff)
            backoff = min(backoff * 2, 10.0)

    async def _consume(self, stop: asyncio.Event) -> None:
        # Create the topics with the configured partitions before subscribing: some brokers
        # (Tansu) auto-create a topic on the first metadata request, with their own default.
        await ensure_topics(self.broker, self.topics)
        consumer = make_consumer(self.broker, self.topics, self.group_id)
        try:
            await consumer.start()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self.settings.batch_size)
                if batch:
                    messages = [message_from_record(r) for records in batch.values() for r in records]
                    if not await self.apply(messages, stop):
                        return  # stopping before the batch was applied: leave the offsets alone
                    offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                    try:
                        # aiokafka retries a commit forever while the topic is unknown (a broker
                        # that lost its topics); bound it and start over with a new consumer.
                        await asyncio.wait_for(consumer.commit(offsets), timeout=COMMIT_TIMEOUT)
                    except CommitFailedError as exc:
                        # A rebalance took the partitions; the inbox absorbs the redelivery.
                        log.info("%s consumer: offset commit skipped (%s)", self.name, exc)
                    except TimeoutError:
                        raise KafkaError(f"offset commit did not finish in {COMMIT_TIMEOUT}s") from None
                await self._purge_if_due()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    # --- applying messages ------------------------------------------------------------------

    async def apply(self, messages: Sequence[Message], stop: asyncio.Event | None = None) -> bool:
        """Apply a batch exactly once; True when done, False if `stop` interrupted a retry."""
        items = _first_of_each_event([parse(m, self.handlers) for m in messages])
        backoff = 0.1
        while True:
            try:
                async with self.engine.begin() as conn:
                    await self._apply_in(conn, items)
                self.stats.batches += 1
                return True
            except INFRASTRUCTURE_ERRORS as exc:
                if not await self._back_off(exc, backoff, stop):
                    return False
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:  # a handler or constraint refused something: find which message
                log.warning("%s consumer: batch of %d failed (%r); applying one by one", self.name, len(items), exc)
                break
        for item in items:
            if not await self._apply_alone(item, stop):
                return False
        return True

    async def _apply_alone(self, item: Ready | Poison, stop: asyncio.Event | None) -> bool:
        attempts = 0
        backoff = 0.1
        while True:
            try:
                async with self.engine.begin() as conn:
                    await self._apply_in(conn, [item])
                return True
            except INFRASTRUCTURE_ERRORS as exc:
                if not await self._back_off(exc, backoff, stop):
                    return False
                backoff = min(backoff * 2, 10.0)
            except Exception as exc:
                attempts += 1
                if attempts >= self.settings.max_attempts:
                    assert isinstance(item, Ready)
                    error = f"failed {attempts} times: {exc!r}"
                    poison = Poison(item.message, item.event.event_id, item.event.event_type, error)
                    log.error("%s consumer: quarantining event %s: %s", self.name, poison.event_id, error)
                    async with self.engine.begin() as conn:
                        await self._apply_in(conn, [poison], attempts=attempts)
                    return True
                await asyncio.sleep(0.05 * attempts)

    async def _back_off(self, exc: BaseException, delay: float, stop: asyncio.Event | None) -> bool:
        self.stats.errors += 1
        self.stats.last_error = f"database: {exc!r}"
        log.warning("%s consumer: database unavailable (%r); retrying in %.1fs", self.name, exc, delay)
        if stop is None:
            await asyncio.sleep(delay)
            return True
        await sleep_or_stop(stop, delay)
        return not stop.is_set()

    async def _apply_in(self, conn: AsyncConnection, items: Sequence[Ready | Poison], attempts: int = 1) -> None:
        inbox = self.inbox
        poison = [i for i in items if isinstance(i, Poison)]
        ready = [i for i in items if isinstance(i, Ready)]
        quarantined = 0
        if poison:
            # executemany form: SQLAlchemy compiles the statement once and batches the rows
            # (a multi-row .values([...]) is compiled anew for every batch size: measured 20% of CPU).
            result = await conn.execute(
                pg_insert(inbox).on_conflict_do_nothing().returning(inbox.c.event_id),
                [
                    {
                        **_row(self.name, p.message, p.event_id, p.event_type),
                        "status": INBOX_QUARANTINED,
                        "attempts": attempts,
                        "error": _text(p.error[:2000]),
                        "value": p.message.value,
                        "headers": p.message.headers,
                        "key": p.message.key,
                    }
                    for p in poison
                ],
            )
            quarantined = len(result.all())
        fresh: list[Ready] = []
        if ready:
            result = await conn.execute(
                pg_insert(inbox)
                .values(status=INBOX_PROCESSED, processed_at=func.now())
                .on_conflict_do_nothing()
                .returning(inbox.c.event_id),
                [_row(self.name, r.message, r.event.event_id, r.event.event_type) for r in ready],
            )
            new_ids = set(result.scalars())
            fresh = [r for r in ready if r.event.event_id in new_ids]
        # Consecutive events of one handler go to it together, in arrival order.
        for _, group in itertools.groupby(fresh, key=lambda r: id(r.handler)):
            run = list(group)
            await run[0].handler.apply(conn, [r.event for r in run])
        self.stats.processed += len(fresh)
        self.stats.duplicates += len(ready) - len(fresh)
        self.stats.quarantined += quarantined

    async def _purge_if_due(self) -> None:
        if time.monotonic() - self._last_purge < PURGE_INTERVAL:
            return
        self._last_purge = time.monotonic()
        inbox = self.inbox
        expired = (
            select(inbox.c.event_id)
            .where(
                inbox.c.consumer == self.name,
                inbox.c.status == INBOX_PROCESSED,
                inbox.c.received_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, self.settings.inbox_retention),
            )
            .limit(PURGE_BATCH)
            .scalar_subquery()
        )
        with contextlib.suppress(*INFRASTRUCTURE_ERRORS):
            async with self.engine.begin() as conn:
                await conn.execute(delete(inbox).where(inbox.c.consumer == self.name, inbox.c.event_id.in_(expired)))


def _first_of_each_event(items: Sequence[Ready | Poison]) -> list[Ready | Poison]:
    seen: set[uuid.UUID] = set()
    unique = []
    for item in items:
        event_id = item.event.event_id if isinstance(item, Ready) else item.event_id
        if event_id not in seen:
            seen.add(event_id)
            unique.append(item)
    return unique


async def retry_quarantined(
    engine: AsyncEngine,
    inbox: Table,
    *,
    consumer: str,
    handlers: HandlerMap,
    event_ids: Sequence[uuid.UUID] | None = None,
) -> tuple[int, int]:
    """Apply quarantined messages again; returns (now processed, still quarantined)."""
    done = failed = 0
    async with engine.begin() as conn:
        query = (
            select(inbox)
            .where(inbox.c.consumer == consumer, inbox.c.status == INBOX_QUARANTINED)
            .order_by(inbox.c.received_at)
            .with_for_update(skip_locked=True)
        )
        if event_ids:
            query = query.where(inbox.c.event_id.in_(event_ids))
        rows = (await conn.execute(query)).all()
        for row in rows:
            message = Message(row.topic, row.partition, row.offset, row.key, row.value, row.headers or {})
            item = parse(message, handlers)
            where = (inbox.c.consumer == consumer) & (inbox.c.event_id == row.event_id)
            error = item.error if isinstance(item, Poison) else None
            if isinstance(item, Ready):
                try:
                    async with conn.begin_nested():
                        await item.handler.apply(conn, [item.event])
                except Exception as exc:  # still failing: keep it quarantined with the new error
                    error = repr(exc)
            if error is None:
                await conn.execute(
                    update(inbox).where(where).values(status=INBOX_PROCESSED, error=None, processed_at=func.now())
                )
                done += 1
            else:
                await conn.execute(
                    update(inbox).where(where).values(attempts=inbox.c.attempts + 1, error=_text(error[:2000]))
                )
                failed += 1
    return done, failed
