"""Helpers for saga tests: accounts and orders through the service layers, raw Kafka access,
deadline polling, and the audit. No fixtures live here, only plain functions."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay import registry
from hsepay.audit import AuditReport, check_invariants
from hsepay.bootstrap import assemble
from hsepay.bootstrap.broker import broker_config
from hsepay.bootstrap.event_secrets import new_secret, signer_for
from hsepay.config import EventSettings, Settings
from hsepay.orders import operations as orders_ops
from hsepay.orders.tables import orders
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.payments import operations as payments_ops
from hsepay.payments.tables import accounts, ledger_entries, payment_decisions
from hsepay.relay.broker import BrokerConfig, ensure_topics, partition_offsets
from hsepay.relay.envelope import OutboxMessage
from hsepay.relay.inbound import Message
from hsepay.relay.signing import SIGNATURE_HEADER, EventSigner
from hsepay.system import BrokerEndpoint, System

T = TypeVar("T")


# --- service-layer shortcuts ----------------------------------------------------------------------


async def open_account(payments_engine: AsyncEngine, balance: int) -> uuid.UUID:
    user = uuid.uuid4()
    async with payments_engine.begin() as conn:
        await payments_ops.open_funded_accounts(conn, {user: balance})
    return user


async def place_order(orders_engine: AsyncEngine, user: uuid.UUID, amount: int, topic: str) -> uuid.UUID:
    """Create an order; its `order.created` waits in the orders outbox for a relay (or for us)."""
    async with orders_engine.begin() as conn:
        order = await orders_ops.create_order(conn, user_id=user, amount=amount, description="test", topic=topic)
    return order.id


async def place_orders(
    orders_engine: AsyncEngine, user: uuid.UUID, amount: int, topic: str, count: int
) -> list[uuid.UUID]:
    """`count` orders, one transaction each (as concurrent API requests would write them)."""
    return [await place_order(orders_engine, user, amount, topic) for _ in range(count)]


async def order_created_row(orders_engine: AsyncEngine, order_id: uuid.UUID) -> Any:
    """The outbox row carrying an order's first `order.created` (its correlation id is the order id)."""
    async with orders_engine.connect() as conn:
        return (
            await conn.execute(
                select(orders_outbox)
                .where(orders_outbox.c.headers["correlation_id"].astext == str(order_id))
                .order_by(orders_outbox.c.id)
                .limit(1)
            )
        ).one()


def as_message(row: Any, *, signer: EventSigner | None, partition: int = 0, offset: int = 0) -> Message:
    """An outbox row (or an OutboxMessage) as the inbox consumer would receive it from Kafka, signed
    by `signer` as its relay would (None: unsigned)."""
    return Message(row.topic, partition, offset, row.key, row.value, signed_headers(row, signer))


def outbox_messages(rows: Sequence[Any], *, signer: EventSigner | None) -> list[Message]:
    return [as_message(row, signer=signer, offset=i) for i, row in enumerate(rows)]


# --- event signatures -----------------------------------------------------------------------------


def event_secrets_env() -> dict[str, str]:
    """Fresh event secrets for both services, as a deployment on a shared broker must set them."""
    return {EventSettings.variable_of(service): new_secret() for service in ("orders", "payments")}


def relay_signer(saga: Saga, service: str) -> EventSigner:
    """What the relay of `service` signs with, under the saga's settings."""
    signer = signer_for(saga.settings, service)
    assert signer is not None, f"{service} has no event secret in this test's settings"
    return signer


def signed_headers(message: OutboxMessage | Any, signer: EventSigner | None) -> dict[str, str]:
    """The headers a relay publishes an outbox row (or OutboxMessage) with; unsigned without a signer."""
    headers = dict(message.headers)
    if signer is not None:
        headers[SIGNATURE_HEADER] = signer.sign(message.topic, message.key.encode(), message.value, headers)
    return headers


# --- Kafka ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Saga:
    """What a saga test runs on: its settings, the session's migrated databases and their engines,
    and the broker (none of it checked again: the session fixtures made it)."""

    settings: Settings
    db_urls: Mapping[str, str]
    engines: Mapping[str, AsyncEngine]
    broker: BrokerEndpoint

    def system(self, *services: str, relays: bool = True, consumers: bool = True) -> System:
        """The parts of `services` on these engines and this broker, as `hsepay.bootstrap.build` makes them."""
        return assemble(
            self.settings,
            [registry.get(name) for name in services],
            engines=self.engines,
            urls=self.db_urls,
            broker=self.broker,
            relays=relays,
            consumers=consumers,
        )

    def with_settings(self, **changes: Any) -> Saga:
        return replace(self, settings=replace(self.settings, **changes))


def broker_of(saga: Saga, service: str = "payments") -> BrokerConfig:
    return broker_config(saga.settings, saga.broker, service)


async def ensure_saga_topics(saga: Saga) -> None:
    kafka = saga.settings.kafka
    await ensure_topics(broker_of(saga), (kafka.orders_topic, kafka.payment_status_topic))


@contextlib.asynccontextmanager
async def kafka_producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=0)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def publish(
    producer: AIOKafkaProducer,
    message: OutboxMessage | Any,
    *,
    signer: EventSigner | None,
    partition: int | None = None,
):
    """Publish an outbox row or OutboxMessage as the relay does (value, key, headers, and a signature
    by `signer`; None: unsigned, as a writer without the secret would)."""
    headers = [(name, value.encode()) for name, value in signed_headers(message, signer).items()]
    return await producer.send_and_wait(
        message.topic, value=message.value, key=message.key.encode(), headers=headers, partition=partition
    )


async def committed_offsets(bootstrap: str, group_id: str, topic: str) -> dict[int, int | None]:
    """The committed offset of every partition of `topic` for a consumer group (None: never committed)."""
    offsets = await partition_offsets(BrokerConfig(bootstrap, False), group_id, [topic])
    return {tp.partition: committed for tp, (_, committed) in offsets.items()}


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    offsets = await partition_offsets(BrokerConfig(bootstrap, False), None, [topic])
    return {tp.partition: end for tp, (end, _) in offsets.items()}


async def wait_caught_up(saga: Saga, service: str, topic: str, timeout: float = 30.0) -> None:
    """Poll until the service's consumer group has committed every message of `topic`."""
    bootstrap = saga.settings.kafka.bootstrap_servers
    group = saga.settings.kafka.group_of(service)

    async def caught_up() -> bool:
        ends = await end_offsets(bootstrap, topic)
        committed = await committed_offsets(bootstrap, group, topic)
        return all((committed.get(p) or 0) >= end for p, end in ends.items())

    await poll_until(caught_up, timeout=timeout, what=f"{group} to commit all of {topic}")


# --- waiting --------------------------------------------------------------------------------------


async def poll_until(
    check: Callable[[], Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {result!r})")
        await asyncio.sleep(interval)


# --- state snapshots and the audit ----------------------------------------------------------------


async def payments_snapshot(payments_engine: AsyncEngine) -> dict[str, Any]:
    """Everything money-related on the payments side, for before/after comparisons."""
    async with payments_engine.connect() as conn:
        balances = {
            row.user_id: row.balance for row in await conn.execute(select(accounts.c.user_id, accounts.c.balance))
        }
        ledger = sorted(
            (row.kind, row.reference, row.amount)
            for row in await conn.execute(
                select(ledger_entries.c.kind, ledger_entries.c.reference, ledger_entries.c.amount)
            )
        )
        decisions = {
            row.order_id: (row.status, row.reason, row.amount)
            for row in await conn.execute(
                select(
                    payment_decisions.c.order_id,
                    payment_decisions.c.status,
                    payment_decisions.c.reason,
                    payment_decisions.c.amount,
                )
            )
        }
    return {"balances": balances, "ledger": ledger, "decisions": decisions}


async def orders_snapshot(orders_engine: AsyncEngine) -> dict[uuid.UUID, tuple[str, str | None, Any]]:
    async with orders_engine.connect() as conn:
        return {
            row.id: (row.status, row.reason, row.updated_at)
            for row in await conn.execute(select(orders.c.id, orders.c.status, orders.c.reason, orders.c.updated_at))
        }


async def count(engine: AsyncEngine, table, *where) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()


async def audit(payments_engine: AsyncEngine, orders_engine: AsyncEngine) -> AuditReport:
    async with payments_engine.connect() as p, orders_engine.connect() as o:
        return await check_invariants(p, o)


async def assert_audit_ok(payments_engine: AsyncEngine, orders_engine: AsyncEngine) -> AuditReport:
    report = await audit(payments_engine, orders_engine)
    assert report.ok, report.to_json()
    return report
