"""Broker access: the one place that configures aiokafka clients, creates topics and reads their state.

Only public aiokafka APIs (the admin client, `end_offsets`); nothing reaches into a client's internals
(the one exception, a running consumer's fetch wait, is hsepay.relay.pacing's).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

__all__ = [
    "BrokerConfig",
    "assigned_lag",
    "consumer_lag",
    "ensure_topics",
    "make_consumer",
    "make_producer",
    "partition_offsets",
    "partitions_of",
    "topic_health",
]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno
REQUEST_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class BrokerConfig:
    bootstrap_servers: str
    idempotence: bool
    partitions: int = 6
    replication_factor: int | None = None
    """None: min(3, brokers in the cluster)."""
    min_insync_replicas: int | None = None
    """None: 2 when the replication factor is 3 or more, else the broker's default."""
    client_id: str = "hsepay"
    delivery_timeout: float = 30.0
    security: Mapping[str, Any] = field(default_factory=dict)
    """Extra aiokafka client options: security_protocol, sasl_*, ssl_context."""
    fetch_max_wait_ms: int = 5
    """How long a fetch may wait for data. Tansu does not answer a waiting fetch when data arrives
    (measured: 5 ms gives 5.5 ms per fetch, 500 ms gives 254 ms), so 5 ms there; Apache Kafka
    answers at once, so a long wait costs no latency and saves the idle polling CPU. A consumer
    that is behind fetches with a longer wait (hsepay.relay.pacing)."""

    def client_options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id, **self.security}

    def replication_for(self, brokers: int) -> tuple[int, int | None]:
        """(replication factor, min.insync.replicas or None) for a topic created on `brokers` brokers."""
        factor = self.replication_factor or min(3, max(brokers, 1))
        min_insync = self.min_insync_replicas or (2 if factor >= 3 else None)
        return factor, min_insync


def make_producer(config: BrokerConfig) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **config.client_options(),
        acks="all",
        enable_idempotence=config.idempotence,
        linger_ms=0,  # a batch of sends made in one loop turn is still batched; a lone one goes at once
        max_batch_size=256 * 1024,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        retry_backoff_ms=100,
    )


def make_consumer(
    config: BrokerConfig,
    topics: Iterable[str],
    group_id: str,
    *,
    listener: Any = None,
    partitions: Iterable[TopicPartition] | None = None,
    group_instance_id: str | None = None,
) -> AIOKafkaConsumer:
    """A consumer of `topics` in group `group_id`: a member of the group (partitions shared by the
    group's rebalances; a static one given `group_instance_id`, see hsepay.relay.membership), or,
    given `partitions`, their only reader (no join: see InboxConsumer)."""
    consumer = AIOKafkaConsumer(
        **config.client_options(),
        group_id=group_id,
        group_instance_id=group_instance_id if partitions is None else None,
        enable_auto_commit=False,  # offsets are committed only after the inbox transaction commits
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        retry_backoff_ms=100,
        request_timeout_ms=REQUEST_TIMEOUT_MS + 5_000,
    )
    if partitions is not None:
        consumer.assign(list(partitions))
    elif listener is None:
        consumer.subscribe(topics=list(topics))
    else:
        consumer.subscribe(topics=list(topics), listener=listener)
    return consumer


async def assigned_lag(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """Records after the consumer's position in each assigned partition it has fetched from, from its
    own state (the high watermark every fetch answer carries; no request)."""
    lag = {}
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue  # not fetched yet: its position may still be being looked up
        with contextlib.suppress(Exception):  # a partition revoked meanwhile: read next time
            lag[tp] = max(0, end - await consumer.position(tp))
    return lag


async def partitions_of(config: BrokerConfig, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of the existing `topics`."""
    admin = _admin(config)
    await admin.start()
    try:
        described = await _describe_existing(admin, topics)
    finally:
        await admin.close()
    return sorted(
        TopicPartition(topic, p["partition"]) for topic, t in described.items() for p in t.get("partitions") or []
    )


def _admin(config: BrokerConfig) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**config.client_options(), request_timeout_ms=REQUEST_TIMEOUT_MS)


async def ensure_topics(config: BrokerConfig, topics: Iterable[str]) -> None:
    """Create missing topics with the configured partitions and safe replication; existing ones are kept."""
    admin = _admin(config)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in topics if topic not in existing]
        if not missing:
            return
        brokers = len((await admin.describe_cluster())["brokers"])
        factor, min_insync = config.replication_for(brokers)
        if factor > brokers:
            raise KafkaError(
                f"cannot create {', '.join(missing)} with replication factor {factor}: the cluster has {brokers} "
                "broker(s) (HSEPAY_KAFKA_REPLICATION)"
            )
        if factor == 1 and brokers > 1:
            log.warning(
                "creating %s with replication factor 1 on a %d-broker cluster: one broker restart takes "
                "their partitions offline (unset HSEPAY_KAFKA_REPLICATION for min(3, brokers))",
                ", ".join(missing),
                brokers,
            )
        configs = {"min.insync.replicas": str(min_insync)} if min_insync else {}
        wanted = [
            NewTopic(topic, num_partitions=config.partitions, replication_factor=factor, topic_configs=configs)
            for topic in missing
        ]
        try:
            response = await admin.create_topics(wanted)
        except TopicAlreadyExistsError:
            return
        for topic, code, *_ in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise KafkaError(f"cannot create topic {topic!r}: error code {code}")
            if code == 0:
                log.info(
                    "created topic %s (%d partitions, replication factor %d%s)",
                    topic,
                    config.partitions,
                    factor,
                    f", min.insync.replicas {min_insync}" if min_insync else "",
                )
    finally:
        await admin.close()


async def topic_health(config: BrokerConfig, topics: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per topic: partitions, replication factor, under-replicated and offline partitions, and problems.

    A problem is something an operator should fix: a missing topic, fewer replicas than this
    cluster allows (a replication factor of 1 on a multi-broker cluster), partitions without a
    leader or out of sync.
    """
    topics = list(topics)
    admin = _admin(config)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        wanted, _ = config.replication_for(brokers)
        described = await _describe_existing(admin, topics)
        report: dict[str, dict[str, Any]] = {}
        for topic in topics:
            info = described.get(topic)
            partitions = (info or {}).get("partitions") or []
            if not partitions:
                report[topic] = {"exists": False, "problems": ["topic does not exist"]}
                continue
            factor = min(len(p["replicas"]) for p in partitions)
            offline = sum(1 for p in partitions if p["leader"] < 0)
            under = sum(1 for p in partitions if len(p["isr"]) < len(p["replicas"]))
            problems = []
            if factor < wanted:
                problems.append(f"replication factor {factor} on a {brokers}-broker cluster (want {wanted})")
            if offline:
                problems.append(f"{offline} partition(s) without a leader")
            if under:
                problems.append(f"{under} partition(s) under-replicated")
            report[topic] = {
                "exists": True,
                "partitions": len(partitions),
                "replication_factor": factor,
                "under_replicated": under,
                "offline": offline,
                "brokers": brokers,
                "problems": problems,
            }
        return report
    finally:
        await admin.close()


async def _describe_existing(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Metadata of those `topics` that exist. Asking for a missing topic by name would create it on
    a broker that auto-creates topics (Tansu always does), so missing ones are left out."""
    existing = set(await admin.list_topics())
    wanted = [topic for topic in topics if topic in existing]
    if not wanted:
        return {}
    return {t["topic"]: t for t in await admin.describe_topics(wanted)}


async def partition_offsets(
    config: BrokerConfig, group_id: str | None, topics: Iterable[str]
) -> dict[TopicPartition, tuple[int, int | None]]:
    """(end offset, offset committed by `group_id` or None) of every partition of the existing `topics`."""
    tps = await partitions_of(config, topics)
    if not tps:
        return {}
    # Committed offsets through a consumer of the group that never joins it: Tansu does not answer
    # the admin client's OffsetFetch version, and both brokers answer this one.
    consumer = AIOKafkaConsumer(**config.client_options(), group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        # Committed offsets first: an end read after them is never behind them, however fast the
        # consumers commit meanwhile (read the other way round, a lag could come out negative).
        committed = {tp: await consumer.committed(tp) if group_id else None for tp in tps}
        ends = await _end_offsets(consumer, tps)
        return {tp: (ends[tp], committed[tp]) for tp in tps}
    finally:
        await consumer.stop()


END_FETCH_WAIT_MS = 500


async def _end_offsets(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """The end offset of each partition: the offset its next record will get.

    Tansu answers ListOffsets(latest) with the base offset of the partition's last record *batch*
    plus one: five records produced in one batch at offsets 0..4 give 1, not 5, and `hsepay status`
    showed a lag of -1 after a batch of two. A fetch response's high watermark is right on Tansu and
    on Apache Kafka alike, so fetch once from just before the listed end, and keep the larger.
    """
    ends = dict(await consumer.end_offsets(tps))
    written = [tp for tp in tps if ends[tp] > 0]
    if written:
        consumer.assign(written)
        for tp in written:
            consumer.seek(tp, ends[tp] - 1)
        await consumer.getmany(timeout_ms=END_FETCH_WAIT_MS, max_records=1)
        for tp in written:
            highwater = consumer.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], highwater)
    return ends


async def consumer_lag(config: BrokerConfig, group_id: str, topics: Iterable[str]) -> dict[str, int]:
    """Messages not yet committed by a consumer group, per topic (end offset - committed offset)."""
    topics = list(topics)
    lag = {topic: 0 for topic in topics}
    for tp, (end, committed) in (await partition_offsets(config, group_id, topics)).items():
        lag[tp.topic] += end - (committed or 0)
    return lag
