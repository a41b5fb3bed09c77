"""What a topic still holds, read back for an audit: the third witness of what two services did.

A service's database and its outbox/inbox records fail together: after a failover onto a standby
that had not received the last commits, a database has lost its tail *and* the outbox and inbox rows
that would have told of it. The broker is another system; what it acknowledged it still holds,
within its retention. `read_history` reads each partition of some topics up to the moment the read
began (within a budget of the latest messages per partition), without joining any consumer group
and without committing anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from hsepay.relay.broker import BrokerConfig, partitions_of
from hsepay.relay.envelope import Envelope, MalformedMessage, decode_envelope
from hsepay.relay.inbound import message_from_record
from hsepay.relay.signing import EventVerifier

__all__ = ["HistoryEvent", "TopicHistory", "end_offsets", "partition_of", "read_history"]

_PARTITIONER = DefaultPartitioner()


def partition_of(key: str, partitions: int) -> int:
    """The partition a keyed message lands on (Kafka's default partitioner, murmur2, as producers use)."""
    return _PARTITIONER(key.encode(), list(range(partitions)), list(range(partitions)))


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    topic: str
    partition: int
    offset: int
    timestamp: float
    """The broker's record timestamp, Unix seconds (the producer's clock: CreateTime)."""
    key: str | None
    envelope: Envelope | None
    """None for a value that is not a valid envelope, or not signed by its topic's producer (`error` says why)."""
    error: str | None = None


@dataclass
class TopicHistory:
    events: list[HistoryEvent] = field(default_factory=list)
    partitions: dict[str, int] = field(default_factory=dict)
    """Topic -> its number of partitions."""
    first_read: dict[TopicPartition, float] = field(default_factory=dict)
    """Per partition, the timestamp of the first message read: older facts are not on record here
    (deleted by retention, before a budget's cut, or before an in-memory broker restarted)."""
    start: dict[TopicPartition, int] = field(default_factory=dict)
    end: dict[TopicPartition, int] = field(default_factory=dict)
    """Where each partition's read began, and the end offset the broker reported."""
    cut_by_budget: bool = False
    complete: bool = True
    """False when the read stopped at its time limit before every end."""

    def covers(self, topic: str, key: str, since: float) -> bool:
        """Whether a message keyed `key` published at `since` (Unix seconds) would be in this history."""
        partitions = self.partitions.get(topic)
        if not partitions:
            return False
        first = self.first_read.get(TopicPartition(topic, partition_of(key, partitions)))
        return first is not None and since >= first

    def facts(self) -> dict[str, object]:
        return {
            "events_read": len(self.events),
            "cut_by_budget": self.cut_by_budget,
            "complete": self.complete,
            "oldest_read": min(self.first_read.values(), default=None),
        }


async def end_offsets(config: BrokerConfig, topics: Iterable[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of the existing `topics`, as the broker reports it."""
    tps = await partitions_of(config, topics)
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(**config.client_options(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


IDLE_FETCHES = 2
"""Empty fetches in a row (of FETCH_WAIT_MS each) after which a partition counts as read to its end."""
FETCH_WAIT_MS = 500


async def read_history(
    config: BrokerConfig,
    topics: Iterable[str],
    *,
    max_per_partition: int,
    timeout: float,
    verifier: EventVerifier | None = None,
) -> TopicHistory:
    """Every message of `topics` published before the read began: at most the latest
    `max_per_partition` of each partition, and for at most `timeout` seconds.

    With a `verifier`, a record whose signature it refuses is kept without its envelope: whoever can
    write to a topic must not make an audit believe (or a repair recreate) an order nobody placed.

    A partition is read to its end when it yields a message published after the read began, or
    when it is past the end offset the broker reported and yields nothing for IDLE_FETCHES fetches
    in a row. The end offset alone is not enough: Tansu reports it per record batch, not per record
    (6 records in one batch: end offset 1). Idle fetches alone are not enough either: on a cluster,
    the first fetches from a partition's leader can come back empty while the consumer still looks
    it up (a 3-node Kafka read 0 of 6 requests that way).
    """
    history = TopicHistory()
    began = time.time()
    ends = await end_offsets(config, topics)
    for tp in ends:
        history.partitions[tp.topic] = max(history.partitions.get(tp.topic, 0), tp.partition + 1)
    if not ends:
        return history
    consumer = AIOKafkaConsumer(
        **config.client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(list(ends))
        beginnings = await consumer.beginning_offsets(list(ends))
        for tp, end in ends.items():
            start = max(beginnings[tp], end - max_per_partition)
            history.cut_by_budget |= start > beginnings[tp]
            history.start[tp], history.end[tp] = start, end
            consumer.seek(tp, start)
        remaining = dict.fromkeys(ends, 0)  # partition -> empty fetches in a row
        deadline = time.monotonic() + timeout
        while remaining:
            if time.monotonic() > deadline:
                history.complete = False
                break
            batch = await consumer.getmany(*remaining, timeout_ms=FETCH_WAIT_MS, max_records=10_000)
            for tp in list(remaining):
                records = batch.get(tp, [])
                remaining[tp] = 0 if records else remaining[tp] + 1
                for record in records:
                    if record.timestamp / 1000 >= began:
                        remaining.pop(tp, None)
                        break
                    history.first_read.setdefault(tp, record.timestamp / 1000)
                    history.events.append(_event(record, verifier))
                if remaining.get(tp, 0) >= IDLE_FETCHES and await consumer.position(tp) >= ends[tp]:
                    remaining.pop(tp)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return history


def _event(record, verifier: EventVerifier | None) -> HistoryEvent:
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    refused = verifier.verify(message_from_record(record)) if verifier is not None else None
    if refused is not None:
        return HistoryEvent(record.topic, record.partition, record.offset, record.timestamp / 1000, key, None, refused)
    try:
        envelope, error = decode_envelope(record.value), None
    except MalformedMessage as exc:
        envelope, error = None, str(exc)
    return HistoryEvent(record.topic, record.partition, record.offset, record.timestamp / 1000, key, envelope, error)
