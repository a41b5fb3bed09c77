"""A consumer far behind catches up on a broker fetched with a short wait (hsepay.relay.pacing)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from hsepay import embedded
from hsepay.relay.broker import BrokerConfig, ensure_topics, make_consumer, partitions_of
from hsepay.relay.pacing import CATCH_UP_WAIT_MS, FetchPacing

PARTITIONS = 6
PER_PARTITION = 12_000
BEHIND = 1_600  # records per partition the consumer starts behind the end
SHORT_WAIT_MS = 5  # what hsepay fetches Tansu with


@pytest.fixture
def own_broker(broker, tmp_path):
    """A Tansu of this test's own (the 72,000 batches below stay out of the session's broker), or the
    external Kafka the run was given."""
    if os.environ.get("HSEPAY_TEST_KAFKA"):
        yield broker
        return
    address = embedded.ensure_broker(tmp_path / "broker", port=0)
    yield address
    embedded.stop_broker(tmp_path / "broker")


async def _fill(address: str, topic: str) -> None:
    """One record per batch, as the relays send them at a steady light load."""
    producer = AIOKafkaProducer(bootstrap_servers=address, acks="all", linger_ms=0)
    await producer.start()
    try:

        async def one_partition(partition: int) -> None:
            for _ in range(PER_PARTITION):
                await producer.send_and_wait(topic, b"x" * 300, partition=partition)

        await asyncio.gather(*(one_partition(p) for p in range(PARTITIONS)))
    finally:
        await producer.stop()


async def test_a_consumer_behind_on_long_partitions_catches_up_and_then_fetches_with_the_short_wait_again(own_broker):
    """Each of 6 partitions holds 12,000 one-record batches and the consumer starts 1,600 short of the
    end. Tansu answers a 5 ms fetch at this depth with nothing at all: without pacing this read 0 of
    the 9,600 records in 60 s, and with pacing judged by the batches alone (which are all empty) the
    same; with the high watermarks, all of them in under a second."""
    replication = int(os.environ.get("HSEPAY_TEST_KAFKA_REPLICATION", "1"))
    config = BrokerConfig(
        own_broker, False, partitions=PARTITIONS, replication_factor=replication, fetch_max_wait_ms=SHORT_WAIT_MS
    )
    topic = f"pacing-{uuid.uuid4().hex[:8]}"
    await ensure_topics(config, [topic])
    await _fill(own_broker, topic)

    consumer = make_consumer(
        config, [topic], f"pacing-{uuid.uuid4().hex[:8]}", partitions=await partitions_of(config, [topic])
    )
    await consumer.start()
    try:
        for tp in consumer.assignment():
            consumer.seek(tp, PER_PARTITION - BEHIND)
        pacing = FetchPacing(consumer, SHORT_WAIT_MS)
        waits, read = set(), 0
        deadline = time.monotonic() + 120
        while read < PARTITIONS * BEHIND and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            await pacing.after()
            waits.add(consumer._fetcher._fetch_max_wait_ms)  # what the next fetch request is built with
            read += sum(len(records) for records in batch.values())
        assert read == PARTITIONS * BEHIND
        assert CATCH_UP_WAIT_MS in waits  # it was behind, and told the fetcher

        assert not await consumer.getmany(timeout_ms=200)  # caught up: nothing more to read
        await pacing.after()
        assert pacing.enabled and pacing.current == SHORT_WAIT_MS
        assert consumer._fetcher._fetch_max_wait_ms == SHORT_WAIT_MS
    finally:
        await consumer.stop()
