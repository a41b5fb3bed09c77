"""What the status views read from the broker: end offsets and committed offsets, on a real broker."""

from __future__ import annotations

import os
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from hsepay.relay.broker import BrokerConfig, consumer_lag, ensure_topics, partition_offsets


async def test_a_partition_consumed_to_its_end_has_no_lag_even_after_batches(broker):
    """Records produced in one batch each count: Tansu's ListOffsets gives the last batch's base
    offset + 1 (1 for five records at 0..4), which made `hsepay status` show a lag of -1 while
    the consumer's own /metrics said 0."""
    topic = f"offsets-{uuid.uuid4().hex[:8]}"
    replication = int(os.environ.get("HSEPAY_TEST_KAFKA_REPLICATION", "1"))
    config = BrokerConfig(broker, False, partitions=3, replication_factor=replication)
    await ensure_topics(config, [topic])
    # The records share a batch; acks="all" because the end offset is the high watermark, which on a
    # replicated partition moves only once the followers have the records (acks=1 answered before).
    producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=200, acks="all")
    await producer.start()
    try:
        sent = [await producer.send(topic, b"x", partition=0) for _ in range(5)]
        sent += [await producer.send(topic, b"y", partition=1) for _ in range(2)]
        await producer.flush()
        assert [(await f).offset for f in sent] == [0, 1, 2, 3, 4, 0, 1]
    finally:
        await producer.stop()

    group = f"offsets-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        p0, p1, p2 = (TopicPartition(topic, n) for n in range(3))
        consumer.assign([p0, p1, p2])
        await consumer.commit({p0: 5, p1: 2})  # everything consumed, as a consumer commits it
    finally:
        await consumer.stop()

    offsets = await partition_offsets(config, group, [topic])
    assert offsets == {p0: (5, 5), p1: (2, 2), p2: (0, None)}
    assert await consumer_lag(config, group, [topic]) == {topic: 0}
    assert await consumer_lag(config, f"{group}-new", [topic]) == {topic: 7}  # a group that read nothing
