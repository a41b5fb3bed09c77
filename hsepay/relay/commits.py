"""Offset commits in the background, so that processing never waits for a group coordinator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka.errors import CommitFailedError, KafkaError

from hsepay.resilience import describe

__all__ = ["COMMIT_GIVE_UP", "OffsetCommitter"]

log = logging.getLogger(__name__)

COMMIT_TIMEOUT = 10.0
COMMIT_GIVE_UP = 30.0
COMMIT_INTERVAL = 0.1
"""Seconds at least between the starts of two commits. Committing after every batch made each
consumer send one OffsetCommit per message at light load (each a write to __consumer_offsets on
the broker); what a crash re-delivers meanwhile, the inbox absorbs."""


class OffsetCommitter:
    """Commits offsets in the background, one commit in flight at a time.

    A commit waits for the group coordinator; when a broker dies the coordinator moves, which takes
    the cluster seconds to notice. Processing must not wait for that: offsets only ever move
    forward, so a commit that fails is simply retried with the next offsets (which include its
    own), and the inbox absorbs whatever is redelivered meanwhile. Commits that keep failing for
    COMMIT_GIVE_UP seconds end the session (a broker that lost its topics makes aiokafka retry a
    commit forever), and the supervisor starts a new consumer.
    """

    def __init__(self, consumer, name: str, interval: float = COMMIT_INTERVAL) -> None:
        self.consumer = consumer
        self.name = name
        self.interval = interval
        self.pending: dict = {}
        self.task: asyncio.Task | None = None
        self.in_flight: dict = {}
        self.failing_since: float | None = None
        self.started_at = -interval
        self.commits = 0

    def add(self, offsets: dict) -> None:
        self.pending.update(offsets)
        self.poll()

    def poll(self, *, now: bool = False) -> None:
        """Harvest a finished commit, start the next one (once `interval` has passed since the last
        one started, or `now`); raise if commits have failed too long."""
        if self.task is not None and self.task.done():
            self._harvest(self.task)
            self.task = None
        due = now or time.monotonic() - self.started_at >= self.interval
        if self.task is None and self.pending and due:
            self.in_flight, self.pending = self.pending, {}
            self.started_at = time.monotonic()
            self.commits += 1
            self.task = asyncio.create_task(self.consumer.commit(self.in_flight))
        if self.failing_since is not None and time.monotonic() - self.failing_since > COMMIT_GIVE_UP:
            raise KafkaError(f"offsets not committed for {COMMIT_GIVE_UP:g}s")

    def _harvest(self, task: asyncio.Task) -> None:
        error = task.exception() if not task.cancelled() else None
        if error is None:
            self.failing_since = None
            return
        if isinstance(error, CommitFailedError):
            # A rebalance took these partitions; their new owner resumes from the last commit.
            log.info("%s consumer: offset commit skipped (%s)", self.name, error)
            return
        log.info("%s consumer: offset commit failed (%s); retrying with the next offsets", self.name, describe(error))
        self.failing_since = self.failing_since or time.monotonic()
        for tp, offset in self.in_flight.items():
            self.pending.setdefault(tp, offset)

    async def flush(self) -> None:
        """On a clean stop: wait (bounded) for the last offsets to be committed."""
        deadline = time.monotonic() + COMMIT_TIMEOUT
        while (self.task is not None or self.pending) and time.monotonic() < deadline:
            if self.task is not None:
                await asyncio.wait([self.task], timeout=max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(KafkaError):
                self.poll(now=True)
            if self.task is None and self.pending and self.failing_since is not None:
                break

    def abandon(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self.task.add_done_callback(lambda t: t.cancelled() or t.exception())
