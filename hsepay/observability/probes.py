"""The sources a process registers: its service databases, the broker, its relays and consumers.

Relays and consumers are read through their stats dataclasses (`RelayStats`, `ConsumerStats`) at
scrape time: hsepay.relay stays free of any metrics library. Database gauges are queried at scrape
time, at most once a second, and bounded in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.connections import bounded, bounded_transaction
from hsepay.observability.sources import Cached, Readiness, Sample
from hsepay.relay.broker import BrokerConfig
from hsepay.relay.consumer import InboxConsumer
from hsepay.relay.outbox import OutboxRelay
from hsepay.relay.store import INBOX_QUARANTINED
from hsepay.resilience import describe

__all__ = ["BrokerSource", "ConsumerSource", "CounterSource", "DatabaseSource", "RelaySource"]

DB_TTL = 1.0
DB_TIMEOUT = 1.5  # as HSEPAY_API_DB_TIMEOUT: ready or not within the time a request gets
BROKER_TTL = 2.0
BROKER_TIMEOUT = 2.0


class DatabaseSource:
    """A service database: reachable? its outbox backlog and its quarantine, read at scrape time."""

    def __init__(self, service: str, engine: AsyncEngine, outbox: Table, inbox: Table) -> None:
        self.key = ("database", service)
        self.service = service
        self.engine = engine
        self.outbox = outbox
        self.inbox = inbox
        self.cache = Cached(DB_TTL)
        self.values: dict[str, float] | None = None
        self.error: str | None = None

    def _query(self):
        o, i = self.outbox, self.inbox
        pending = select(func.count()).select_from(o).where(o.c.sent_at.is_(None)).scalar_subquery()
        oldest = (
            select(func.coalesce(func.extract("epoch", func.now() - func.min(o.c.created_at)), 0))
            .where(o.c.sent_at.is_(None))
            .scalar_subquery()
        )
        quarantined = select(func.count()).select_from(i).where(i.c.status == INBOX_QUARANTINED).scalar_subquery()
        return select(pending.label("pending"), oldest.label("oldest"), quarantined.label("quarantined"))

    async def refresh(self) -> None:
        async with self.cache.updating() as due:
            if not due:
                return
            try:
                deadline = asyncio.get_running_loop().time() + DB_TIMEOUT
                async with bounded(self.engine, deadline=deadline) as conn:
                    row = (await conn.execute(self._query())).one()
                self.values = {
                    "hsepay_outbox_pending_rows": row.pending,
                    "hsepay_outbox_oldest_pending_age_seconds": float(row.oldest),
                    "hsepay_inbox_quarantined_messages": row.quarantined,
                }
                self.error = None
            except Exception as exc:  # reported as hsepay_database_up 0, never as a failed scrape
                self.values, self.error = None, describe(exc)

    def samples(self) -> Iterable[Sample]:
        labels = {"service": self.service}
        yield Sample("hsepay_database_up", labels, 0 if self.values is None else 1)
        for family, value in (self.values or {}).items():
            yield Sample(family, labels, value)

    async def ready(self) -> Readiness:
        """Ready when a write commits in time on the pool the requests use: a transaction that takes
        a transaction id fails on a read-only or recovering server, and its commit waits for a
        synchronous standby as an order's does (`SELECT 1` on an idle pooled connection said
        ready while every order failed for 15.5 minutes, issue 22)."""
        deadline = asyncio.get_running_loop().time() + DB_TIMEOUT
        try:
            async with bounded_transaction(self.engine, deadline=deadline) as conn:
                await conn.exec_driver_sql("SELECT txid_current()")
        except Exception as exc:
            return Readiness(False, {"error": describe(exc)})
        return Readiness(True)


class BrokerSource:
    """The broker a worker process uses: does it answer a metadata request (cached two seconds)?"""

    def __init__(self, config: BrokerConfig) -> None:
        self.key = ("broker",)
        self.config = config
        self.cache = Cached(BROKER_TTL)
        self.answer = Readiness(False, {"error": "not checked yet"})

    async def refresh(self) -> None:
        async with self.cache.updating() as due:
            if due:
                self.answer = await self._check()

    async def _check(self) -> Readiness:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.config.client_options(), request_timeout_ms=int(BROKER_TIMEOUT * 1000))
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                await admin.start()
                brokers = len((await admin.describe_cluster())["brokers"])
            return Readiness(True, {"brokers": brokers})
        except Exception as exc:
            return Readiness(False, {"error": describe(exc) if str(exc) else type(exc).__name__})
        finally:
            try:
                await admin.close()
            except Exception:  # closing a client that never connected may fail too
                pass

    def samples(self) -> Iterable[Sample]:
        yield Sample("hsepay_broker_up", {}, 1 if self.answer.ok else 0)

    async def ready(self) -> Readiness:
        await self.refresh()
        return self.answer


class RelaySource:
    def __init__(self, service: str, relay: OutboxRelay) -> None:
        self.key = ("relay", service)
        self.service = service
        self.relay = relay

    async def refresh(self) -> None:
        return None

    def samples(self) -> Iterable[Sample]:
        stats, labels = self.relay.stats, {"service": self.service}
        yield Sample("hsepay_outbox_published_total", labels, stats.published)
        yield Sample("hsepay_outbox_publish_failures_total", labels, stats.errors)
        yield Sample("hsepay_relay_active", labels, 1 if stats.active else 0)
        yield Sample("hsepay_relay_standby", labels, 1 if stats.standing_by else 0)

    async def ready(self) -> Readiness:
        stats = self.relay.stats
        state = "active" if stats.active else "standby" if stats.standing_by else "starting"
        return Readiness(
            stats.active or stats.standing_by,
            {"state": state, "published": stats.published, "last_error": stats.last_error},
        )


class ConsumerSource:
    def __init__(self, service: str, consumer: InboxConsumer) -> None:
        self.key = ("consumer", service)
        self.service = service
        self.consumer = consumer

    async def refresh(self) -> None:
        return None

    def samples(self) -> Iterable[Sample]:
        stats, labels = self.consumer.stats, {"service": self.service}
        yield Sample("hsepay_inbox_processed_total", labels, stats.processed)
        yield Sample("hsepay_inbox_duplicates_total", labels, stats.duplicates)
        yield Sample("hsepay_inbox_quarantined_total", labels, stats.quarantined)
        yield Sample("hsepay_consumer_errors_total", labels, stats.errors)
        yield Sample("hsepay_consumer_joined", labels, 1 if stats.joined else 0)
        yield Sample("hsepay_consumer_assigned_partitions", labels, stats.partitions if stats.joined else 0)
        for (topic, partition), lag in sorted(getattr(stats, "lag", {}).items()):
            yield Sample(
                "hsepay_consumer_lag_messages",
                {"service": self.service, "topic": topic, "partition": str(partition)},
                lag,
            )

    async def ready(self) -> Readiness:
        stats = self.consumer.stats
        return Readiness(
            stats.joined,
            {"joined": stats.joined, "partitions": stats.partitions, "last_error": stats.last_error},
        )


class CounterSource:
    """Counts kept by the process itself (e.g. re-drives), exported as counters of `catalog.LIVE`."""

    def __init__(self, key: tuple[str, ...], counts: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self.key = key
        self.counts = counts

    async def refresh(self) -> None:
        return None

    def samples(self) -> Iterable[Sample]:
        for (family, service), value in self.counts().items():
            yield Sample(family, {"service": service}, value)

    async def ready(self) -> Readiness:
        return Readiness(True)
