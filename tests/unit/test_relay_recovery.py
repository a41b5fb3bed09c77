"""The relay's acked prefix and re-send order, and producer recovery, against fakes (no engines).

A send that fails from the k-th message on — with each error kind aiokafka raises when a broker
restarts, fences or loses a leader — must leave exactly the acked prefix marked sent, and the next
round must re-send the rest in id order through a fresh producer.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka.errors import (
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RequestTimedOutError,
    UnknownProducerId,
)

from hsepay.config import Settings
from hsepay.relay.broker import BrokerConfig
from hsepay.relay.leadership import LeadershipLost
from hsepay.relay.outbox import PURGE_BATCH, OutboxRelay
from hsepay.relay.publisher import Publisher, PublishFailed, Record
from tests.fakes import FATAL, HANG, FakeBroker, FakeProducer, InMemoryOutbox, Row

ERROR_KINDS = [
    OutOfOrderSequenceNumber(),
    UnknownProducerId(),
    ProducerFenced(),
    KafkaTimeoutError(),  # an expired batch
    RequestTimedOutError(),  # a request timed out on a dead leader
    NotLeaderForPartitionError(),
    HANG,  # never acknowledged: the delivery timeout ends the wait
]
IDS = [type(e).__name__ if e != HANG else "never-acked" for e in ERROR_KINDS]


def _rows(count: int) -> list[Row]:
    return [Row(id=i, topic="orders", key=f"user-{i % 3}", value=f"event-{i}".encode()) for i in range(1, count + 1)]


def _relay(outbox: InMemoryOutbox, broker: FakeBroker, batch: int = 100) -> OutboxRelay:
    settings = Settings.from_env({"HSEPAY_RELAY_BATCH": str(batch)})
    return OutboxRelay(
        name="orders",
        engine=None,  # type: ignore[arg-type]  # the store replaces the database
        db_url="postgresql+psycopg://unused/unused",
        outbox=None,  # type: ignore[arg-type]
        broker=BrokerConfig("fake:9092", True),
        topics=("orders",),
        settings=settings.relay,
        producer_factory=broker.producer,
        store=outbox,
    )


def _publisher(broker: FakeBroker) -> Publisher:
    return Publisher(broker.producer, delivery_timeout=0.05, stop_timeout=0.05)


def _values(records: list[Record]) -> list[bytes]:
    return [record.value for record in records]


def assert_delivered_in_order(broker: FakeBroker, outbox: InMemoryOutbox) -> None:
    """Every row reached the broker, and per key (partition) the first copies arrived in id order;
    later copies are duplicates that the consumers' inbox drops."""
    firsts = list(dict.fromkeys(_values(broker.log)))
    assert sorted(firsts) == sorted(row.value for row in outbox.rows)
    for key in {row.key for row in outbox.rows}:
        expected = [row.value for row in outbox.rows if row.key == key]
        assert [v for v in firsts if v in expected] == expected, key


@pytest.mark.parametrize("error", ERROR_KINDS, ids=IDS)
@pytest.mark.parametrize("k", [0, 1, 4, 9])
async def test_failure_from_the_kth_send_marks_the_prefix_and_a_fresh_producer_resends_the_rest(error, k):
    outbox = InMemoryOutbox(_rows(10))
    broker = FakeBroker({k: error})
    relay = _relay(outbox, broker)
    publisher = _publisher(broker)

    with pytest.raises(PublishFailed) as failed:
        await relay.publish_batch(publisher)
    assert failed.value.acked == k
    assert [row.id for row in outbox.rows if row.sent] == list(range(1, k + 1))
    assert broker.producers[0].stopped, "the failed producer is discarded"

    assert await relay.publish_batch(publisher) == 10 - k
    assert len(broker.producers) == 2 and broker.producers[1].started
    assert all(row.sent for row in outbox.rows)
    assert relay.stats.published == 10
    assert_delivered_in_order(broker, outbox)
    if isinstance(error, FATAL):
        # The producer died at the failure: nothing after it went out twice.
        assert _values(broker.log) == [row.value for row in outbox.rows]


async def test_a_later_ack_after_an_earlier_failure_is_resent_not_marked():
    """Only the prefix counts: a row of another partition acked after a failed one is not marked,
    it is re-sent (a copy the inbox drops), so first arrivals per key still follow the ids."""
    broker = FakeBroker({2: NotLeaderForPartitionError()})
    outbox = InMemoryOutbox(_rows(5))
    relay = _relay(outbox, broker)
    publisher = _publisher(broker)

    with pytest.raises(PublishFailed) as failed:
        await relay.publish_batch(publisher)
    assert failed.value.acked == 2
    assert [row.id for row in outbox.rows if row.sent] == [1, 2]
    await relay.publish_batch(publisher)
    assert all(row.sent for row in outbox.rows)
    # Rows 4 and 5 (keys user-1, user-2) were acked in the first round and re-sent in the second.
    assert _values(broker.log) == [b"event-1", b"event-2", b"event-4", b"event-5", b"event-3", b"event-4", b"event-5"]
    assert_delivered_in_order(broker, outbox)


async def test_a_failed_batch_is_resent_whole_batches_later_in_id_order():
    outbox = InMemoryOutbox(_rows(25))
    broker = FakeBroker({3: OutOfOrderSequenceNumber(), 12: UnknownProducerId(), 20: HANG})
    relay = _relay(outbox, broker, batch=7)
    publisher = _publisher(broker)
    failures = 0
    while not all(row.sent for row in outbox.rows):
        try:
            await relay.publish_batch(publisher)
        except PublishFailed:
            failures += 1
        assert failures < 10
    assert failures == 3
    assert len(broker.producers) == 4
    assert_delivered_in_order(broker, outbox)


async def test_a_producer_whose_stop_hangs_is_abandoned_within_the_stop_timeout():
    broker = FakeBroker({0: HANG})
    hanging = FakeProducer(broker, stop_hangs=True)
    publisher = Publisher(lambda: hanging, delivery_timeout=0.05, stop_timeout=0.05)
    with pytest.raises(PublishFailed) as failed:
        await asyncio.wait_for(publisher.publish([Record("t", b"k", b"v", [])]), timeout=2)
    assert failed.value.acked == 0
    assert isinstance(failed.value.cause, TimeoutError)


async def test_a_producer_that_cannot_start_is_discarded_and_retried():
    broker = FakeBroker()
    attempts: list[FakeProducer] = []

    class Unstartable(FakeProducer):
        async def start(self) -> None:
            raise KafkaTimeoutError()

    def factory() -> FakeProducer:
        producer = Unstartable(broker) if not attempts else FakeProducer(broker)
        attempts.append(producer)
        return producer

    publisher = Publisher(factory, delivery_timeout=0.05)
    with pytest.raises(PublishFailed):
        await publisher.publish([Record("t", b"k", b"v", [])])
    assert await publisher.publish([Record("t", b"k", b"v", [])]) == 1
    assert len(attempts) == 2 and publisher.producers_started == 1


class _Lead:
    """A Leadership stand-in: `lost` says whether the lock session is gone."""

    def __init__(self, lost: bool) -> None:
        self.lost = lost
        self.confirmed = 0

    conn = None

    async def confirming(self, statement):
        self.confirmed += 1
        if self.lost:
            statement.close()
            raise LeadershipLost("terminated by idle_session_timeout")
        return await statement

    def heartbeat(self):
        return contextlib.nullcontext()


async def test_a_relay_that_lost_its_lock_publishes_nothing():
    outbox = InMemoryOutbox(_rows(3))
    broker = FakeBroker()
    relay = _relay(outbox, broker)
    with pytest.raises(LeadershipLost):
        await relay.publish_batch(_publisher(broker), _Lead(lost=True))
    assert broker.log == [] and broker.producers == []
    assert not any(row.sent for row in outbox.rows)


async def test_the_lock_is_confirmed_before_every_batch():
    outbox = InMemoryOutbox(_rows(5))
    broker = FakeBroker()
    relay = _relay(outbox, broker, batch=2)
    lead = _Lead(lost=False)
    publisher = _publisher(broker)
    while await relay.publish_batch(publisher, lead):
        pass
    assert lead.confirmed == 4  # three batches of rows, then the empty read
    assert len(broker.log) == 5


async def test_only_the_leading_relay_purges_sent_rows():
    outbox = InMemoryOutbox(_rows(1))
    purges: list[tuple[float, int]] = []

    async def purge_sent(older_than: float, limit: int) -> int:
        purges.append((older_than, limit))
        return 1

    outbox.purge_sent = purge_sent  # type: ignore[method-assign]
    relay = _relay(outbox, FakeBroker())
    job = relay.purge_job()
    assert job.interval == relay.settings.purge_interval
    assert await job.step() == 0 and purges == []  # standing by: the leader purges
    relay.stats.active = True
    assert await job.step() == 1 and purges == [(relay.settings.retention, PURGE_BATCH)]
