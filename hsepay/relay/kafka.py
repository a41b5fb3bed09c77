"""Broker access shared by relays and consumers: one place configures aiokafka."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

__all__ = ["BrokerConfig", "ensure_topics", "make_consumer", "make_producer", "consumer_lag"]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


@dataclass(frozen=True)
class BrokerConfig:
    bootstrap_servers: str
    idempotence: bool
    partitions: int = 6
    replication_factor: int = 1
    client_id: str = "hsepay"


def make_producer(config: BrokerConfig) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=config.bootstrap_servers,
        client_id=config.client_id,
        acks="all",
        enable_idempotence=config.idempotence,
        linger_ms=0,  # a batch of sends made in one loop turn is still batched; a lone one goes at once
        max_batch_size=256 * 1024,
        request_timeout_ms=15_000,
        retry_backoff_ms=100,
    )


def make_consumer(config: BrokerConfig, topics: Iterable[str], group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=config.bootstrap_servers,
        client_id=config.client_id,
        group_id=group_id,
        enable_auto_commit=False,  # offsets are committed only after the inbox transaction commits
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=5,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        retry_backoff_ms=100,
    )


async def ensure_topics(config: BrokerConfig, topics: Iterable[str]) -> None:
    """Create missing topics with the configured partitions; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers, client_id=config.client_id)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(topic, num_partitions=config.partitions, replication_factor=config.replication_factor)
            for topic in topics
            if topic not in existing
        ]
        if not wanted:
            return
        try:
            response = await admin.create_topics(wanted)
        except TopicAlreadyExistsError:
            return
        for topic, code, *_ in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise KafkaError(f"cannot create topic {topic!r}: error code {code}")
            if code == 0:
                log.info("created topic %s (%d partitions)", topic, config.partitions)
    finally:
        await admin.close()


async def consumer_lag(config: BrokerConfig, group_id: str, topics: Iterable[str]) -> dict[str, int]:
    """Messages not yet committed by a consumer group, per topic (end offset - committed offset)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=config.bootstrap_servers, group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        lag: dict[str, int] = {}
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await consumer._client.force_metadata_update()  # the topic may be new to this client
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            if not tps:
                lag[topic] = 0
                continue
            ends = await consumer.end_offsets(tps)
            total = 0
            for tp in tps:
                committed = await consumer.committed(tp)
                total += ends[tp] - (committed or 0)
            lag[topic] = total
        return lag
    finally:
        await consumer.stop()
