"""Fetch pacing: a consumer that is behind lets its fetches wait longer, so a short-wait broker can catch up.

Tansu (the embedded broker) reads a fetched partition for at most the fetch's max wait, after a lookup
whose cost grows with the partition's length, and does not answer a waiting fetch when new data
arrives. hsepay therefore fetches from it with a 5 ms wait (hsepay.bootstrap.broker), which is right
when the consumer is caught up and ruinous when it is behind: at 12,000 one-record batches in each of
6 partitions a 5 ms fetch returns one record or none, and a consumer 1,600 records behind read none of
them in 60 s; with a 250 ms wait it read all 9,600 in 0.4 s. That is how the one-hour soak on the
embedded stack stalled (a backlog after a fault that the payments consumer never worked off).

While records are waiting a longer wait costs no latency, because the broker answers as soon as it has
read them; once the consumer has caught up, the configured wait is back. Where the configured wait is
already long (Apache Kafka, 500 ms, answered as soon as data arrives) this changes nothing.

aiokafka has no public way to change a running consumer's fetch wait, so this is the one module that
sets a private attribute of it (``AIOKafkaConsumer._fetcher._fetch_max_wait_ms``, read when each fetch
request is built, aiokafka 0.11-0.14). If a later aiokafka moves it, pacing switches itself off with
one warning; tests/integration/test_fetch_pacing.py fails then.
"""

from __future__ import annotations

import logging
from typing import Any

from hsepay.relay.broker import assigned_lag

__all__ = ["CATCH_UP_WAIT_MS", "FetchPacing"]

log = logging.getLogger(__name__)

CATCH_UP_WAIT_MS = 250


class FetchPacing:
    """Sets a consumer's fetch wait after each `getmany`: `CATCH_UP_WAIT_MS` while it is behind, else `idle_ms`.

    Behind: an assigned partition's high watermark, which every fetch answer carries, records or not,
    is past the consumer's position. Not judged by the batch: a 5 ms fetch from a long Tansu partition
    answers with no records at all, so a consumer judging by its batches never learns it is behind
    (tests/integration/test_fetch_pacing.py read 0 of 9,600 records in 120 s that way)."""

    def __init__(self, consumer: Any, idle_ms: int) -> None:
        self.consumer = consumer
        self.idle_ms = idle_ms
        self.behind_ms = max(idle_ms, CATCH_UP_WAIT_MS)
        self.current = idle_ms
        self.enabled = self.behind_ms != idle_ms

    async def after(self) -> None:
        """Call after each `getmany` (the positions have moved past what it returned)."""
        if not self.enabled:
            return
        behind = any((await assigned_lag(self.consumer)).values())
        wanted = self.behind_ms if behind else self.idle_ms
        if wanted == self.current:
            return
        fetcher = getattr(self.consumer, "_fetcher", None)
        if fetcher is None or not isinstance(getattr(fetcher, "_fetch_max_wait_ms", None), int):
            self.enabled = False
            log.warning("fetch pacing off: this aiokafka has no _fetcher._fetch_max_wait_ms to set")
            return
        fetcher._fetch_max_wait_ms = wanted
        self.current = wanted
