"""Fakes of hsepay's own abstractions (a Producer, an OutboxStore) for fast tests without engines."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId

from hsepay.relay.publisher import Record

HANG = "hang"
"""A failure plan entry: the send is never acknowledged (a dead leader, an idempotent producer)."""


FATAL = (OutOfOrderSequenceNumber, UnknownProducerId, ProducerFenced)
"""Errors that end aiokafka's sender task: every later send of that producer fails the same way."""


class FakeBroker:
    """An append-only log and a plan of which sends fail: `failures[n]` is the n-th send's fate
    (counted over all producers): an exception, or HANG. Each key is its own partition."""

    def __init__(self, failures: dict[int, BaseException | str] | None = None) -> None:
        self.log: list[Record] = []
        self.sends = 0
        self.failures = dict(failures or {})
        self.producers: list[FakeProducer] = []

    def producer(self) -> FakeProducer:
        producer = FakeProducer(self)
        self.producers.append(producer)
        return producer


class FakeProducer:
    """Like aiokafka's producer: a fatal error fails every later send; any other failure (or a hang)
    holds back the later sends of the same partition, since a partition has one batch in flight."""

    def __init__(self, broker: FakeBroker, *, stop_hangs: bool = False) -> None:
        self.broker = broker
        self.started = False
        self.stopped = False
        self.stop_hangs = stop_hangs
        self.fatal: BaseException | None = None
        self.blocked: dict[bytes, BaseException | str] = {}

    async def start(self) -> None:
        self.started = True

    async def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> asyncio.Future:
        assert self.started and not self.stopped, "send on a producer that is not running"
        future = asyncio.get_running_loop().create_future()
        fate = self.fatal or self.blocked.get(key)
        if fate is None:
            fate = self.broker.failures.pop(self.broker.sends, None)
            self.broker.sends += 1
        if fate is None:
            self.broker.log.append(Record(topic, key, value, headers))
            future.set_result(len(self.broker.log) - 1)
            return future
        if isinstance(fate, FATAL):
            self.fatal = fate
        else:
            self.blocked[key] = fate
        if fate != HANG:
            future.set_exception(fate)
        return future

    async def stop(self) -> None:
        if self.stop_hangs:
            await asyncio.Event().wait()
        self.stopped = True


@dataclass
class Row:
    id: int
    topic: str
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    sent: bool = False

    def __iter__(self):  # a pending row reads as the tuple (id, topic, key, value, headers), as a Row does
        return iter((self.id, self.topic, self.key, self.value, self.headers))

    def __getitem__(self, index: int):
        return tuple(self)[index]


class InMemoryOutbox:
    """An OutboxStore in a list, in id order."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows

    async def pending(self, limit: int) -> list[Row]:
        return [row for row in self.rows if not row.sent][:limit]

    async def mark_sent(self, ids: Any) -> None:
        wanted = set(ids)
        for row in self.rows:
            if row.id in wanted:
                row.sent = True

    async def purge_sent(self, older_than: float, limit: int) -> int:
        return 0

    def on(self, connection: Any) -> InMemoryOutbox:
        return self
