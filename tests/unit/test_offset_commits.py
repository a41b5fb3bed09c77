"""The offset committer against a fake consumer: batches committed together at most every
`interval`, one commit in flight, and everything committed on a clean stop."""

from __future__ import annotations

import asyncio

from hsepay.relay.commits import OffsetCommitter


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[dict] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, offsets: dict) -> None:
        await self.gate.wait()
        self.commits.append(dict(offsets))


async def test_offsets_of_many_batches_go_in_one_commit_per_interval():
    consumer = FakeConsumer()
    committer = OffsetCommitter(consumer, "test", interval=3600)
    committer.add({"p0": 1})  # the first commit goes at once
    for offset in range(2, 50):
        await asyncio.sleep(0)
        committer.add({"p0": offset, "p1": offset})
    await asyncio.sleep(0)
    assert consumer.commits == [{"p0": 1}]  # the rest waits for the interval
    await committer.flush()  # a clean stop commits what is pending, interval or not
    assert consumer.commits == [{"p0": 1}, {"p0": 49, "p1": 49}]


async def test_one_commit_in_flight_and_the_next_takes_everything_pending():
    consumer = FakeConsumer()
    consumer.gate.clear()
    committer = OffsetCommitter(consumer, "test", interval=0)
    committer.add({"p0": 1})
    await asyncio.sleep(0)
    committer.add({"p0": 2})
    committer.add({"p0": 3, "p1": 7})
    assert committer.commits == 1  # the first is still in flight
    consumer.gate.set()
    await committer.flush()
    assert consumer.commits == [{"p0": 1}, {"p0": 3, "p1": 7}]
