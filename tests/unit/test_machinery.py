"""Fast tests of the generic machinery, no engines: retry and supervision, inbound decoding,
the orders cursor, idempotency keys, the id rule and the registry."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from hsepay import registry
from hsepay.errors import InvalidRequest
from hsepay.idempotency import MAX_KEY_LENGTH, validate_key
from hsepay.ids import parse_uuid
from hsepay.orders.errors import InvalidCursor
from hsepay.orders.model import Order
from hsepay.orders.operations import decode_cursor, encode_cursor
from hsepay.periodic import Periodic, run_periodic
from hsepay.relay.envelope import new_message
from hsepay.relay.inbound import EventHandler, Message, Poison, Ready, decode, first_of_each_event
from hsepay.resilience import Backoff, supervise

# --- retry and supervision -----------------------------------------------------------------------


async def test_backoff_grows_to_its_cap_and_resets():
    backoff = Backoff(cap=0.4, initial=0.1)
    stop = asyncio.Event()
    stop.set()  # no real waiting: the delays are what is under test
    delays = []
    for _ in range(5):
        delays.append(backoff.delay)
        assert await backoff.wait(stop) is False
    assert delays == [0.1, 0.2, 0.4, 0.4, 0.4]
    backoff.reset()
    assert backoff.delay == 0.1


async def test_backoff_wait_ends_at_once_when_stopping():
    backoff = Backoff(cap=3600, initial=3600)
    stop = asyncio.Event()
    waiting = asyncio.create_task(backoff.wait(stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, timeout=5) is False


async def test_supervise_retries_a_failing_turn_and_stops_on_signal():
    stop = asyncio.Event()
    turns: list[int] = []
    failures: list[BaseException] = []

    async def turn() -> None:
        turns.append(len(turns))
        if len(turns) < 3:
            raise ConnectionRefusedError("database down")
        stop.set()

    await asyncio.wait_for(supervise("test", turn, stop, Backoff(cap=0.01, initial=0.001), failures.append), 5)
    assert turns == [0, 1, 2]
    assert [type(f) for f in failures] == [ConnectionRefusedError, ConnectionRefusedError]


async def test_supervise_keeps_going_after_a_bug():
    stop = asyncio.Event()
    seen: list[str] = []

    async def turn() -> None:
        seen.append("turn")
        if len(seen) == 1:
            raise KeyError("a bug")
        stop.set()

    await asyncio.wait_for(supervise("test", turn, stop, Backoff(cap=0.01, initial=0.001)), 5)
    assert seen == ["turn", "turn"]


async def test_a_periodic_job_runs_at_once_then_each_interval_and_outlives_a_failure(caplog):
    stop = asyncio.Event()
    results: list[int | BaseException] = [2, ConnectionRefusedError("database down"), 0, 3]
    counted: list[int] = []

    async def step() -> int:
        result = results.pop(0)
        if not results:
            stop.set()
        if isinstance(result, BaseException):
            raise result
        return result

    job = Periodic("test purge", 0.001, step, "purged %d rows")
    with caplog.at_level(logging.INFO, logger="hsepay.periodic"):
        await asyncio.wait_for(run_periodic(job, stop, max_backoff=0.01, counted=counted.append), 5)
    assert results == [] and counted == [2, 3]
    assert [r.getMessage() for r in caplog.records if r.name == "hsepay.periodic"] == [
        "test purge: purged 2 rows",
        "test purge: purged 3 rows",
    ]


# --- inbound decoding ----------------------------------------------------------------------------


class Payload(msgspec.Struct):
    order_id: uuid.UUID
    amount: int


async def _noop(conn, events) -> None:
    return None


HANDLERS = {"thing.happened": EventHandler(schema=Payload, apply=_noop)}


def _message(value: bytes | None, offset: int = 7) -> Message:
    return Message("orders", 2, offset, "key", value, {"event_type": "thing.happened"})


def test_a_valid_envelope_decodes_to_its_handler_with_typed_data():
    order_id = uuid.uuid4()
    out = new_message(
        topic="orders",
        key="k",
        event_type="thing.happened",
        data={"order_id": str(order_id), "amount": 5},
        correlation_id=str(order_id),
    )
    item = decode(_message(out.value), HANDLERS)
    assert isinstance(item, Ready)
    assert item.event_id == out.event_id
    assert item.event.data == Payload(order_id=order_id, amount=5)
    assert (item.event.topic, item.event.partition, item.event.offset) == ("orders", 2, 7)


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "empty message value"),
        (b"", "empty message value"),
        (b"not json", "not an event envelope"),
        (b'{"event_id": "x"}', "not an event envelope"),
    ],
)
def test_malformed_values_are_poison_with_a_stable_id(value, reason):
    first = decode(_message(value), HANDLERS)
    again = decode(_message(value), HANDLERS)
    assert isinstance(first, Poison) and reason in first.error
    assert first.event_id == again.event_id  # a redelivery is not quarantined twice
    assert decode(_message(value, offset=8), HANDLERS).event_id != first.event_id


def test_unknown_type_and_invalid_data_are_poison_under_their_event_id():
    unknown = new_message(topic="t", key="k", event_type="other", data={}, correlation_id="c")
    bad = new_message(topic="t", key="k", event_type="thing.happened", data={"amount": "x"}, correlation_id="c")
    item = decode(_message(unknown.value), HANDLERS)
    assert isinstance(item, Poison) and item.event_id == unknown.event_id and "no handler" in item.error
    item = decode(_message(bad.value), HANDLERS)
    assert isinstance(item, Poison) and item.event_id == bad.event_id and "invalid thing.happened" in item.error


def test_first_of_each_event_keeps_arrival_order():
    a = new_message(topic="t", key="k", event_type="other", data={}, correlation_id="c")
    b = new_message(topic="t", key="k", event_type="other", data={}, correlation_id="c")
    items = [decode(_message(v), HANDLERS) for v in (a.value, b.value, a.value)]
    assert [i.event_id for i in first_of_each_event(items)] == [a.event_id, b.event_id]


# --- the orders cursor ---------------------------------------------------------------------------


def test_cursor_round_trip():
    now = datetime.now(UTC)
    order = Order(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        amount=1,
        description="",
        status="created",
        reason=None,
        created_at=now,
        updated_at=now,
    )
    assert decode_cursor(encode_cursor(order)) == (now, order.id)


@pytest.mark.parametrize("cursor", ["", "!!", "bm90IGEgY3Vyc29y", "MjAyNi0wMS0wMXx4"])
def test_foreign_cursors_are_refused(cursor):
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


# --- idempotency keys and ids ----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["order-42", "  padded  ", "a" * MAX_KEY_LENGTH])
def test_valid_idempotency_keys(key):
    assert validate_key(key) == key.strip()


@pytest.mark.parametrize("key", ["", "   ", "a" * (MAX_KEY_LENGTH + 1), "tab\there", "new\nline", "bell\x07"])
def test_invalid_idempotency_keys(key):
    with pytest.raises(InvalidRequest):
        validate_key(key)


@pytest.mark.parametrize(
    "raw, ok",
    [
        ("3fa85f64-5717-4562-b3fc-2c963f66afa6", True),
        ("3FA85F64-5717-4562-B3FC-2C963F66AFA6", True),
        ("3fa85f6457174562b3fc2c963f66afa6", True),
        ("{3fa85f64-5717-4562-b3fc-2c963f66afa6}", False),
        ("urn:uuid:3fa85f64-5717-4562-b3fc-2c963f66afa6", False),
        ("3fa85f64-5717-4562-b3fc-2c963f66afa", False),
        ("", False),
    ],
)
def test_one_uuid_rule(raw, ok):
    parsed = parse_uuid(raw)
    assert (parsed is not None) is ok
    if ok:
        assert str(parsed) == "3fa85f64-5717-4562-b3fc-2c963f66afa6"
        # the rule is msgspec's, so a body or a query parameter decodes the same way
        assert msgspec.convert(raw, uuid.UUID) == parsed


# --- the registry ---------------------------------------------------------------------------------


def test_unknown_service_is_an_error_never_a_default():
    with pytest.raises(registry.UnknownService, match="unknown service 'shipping'"):
        registry.get("shipping")
    with pytest.raises(registry.UnknownService):
        registry.named("shipping")


def test_services_with_a_database_have_the_generic_tables():
    specs = registry.with_database()
    assert [spec.name for spec in specs] == ["payments", "orders"]
    for spec in specs:
        assert {t.name for t in (spec.database.outbox, spec.database.inbox, spec.database.idempotency_keys)} == {
            "outbox",
            "inbox",
            "idempotency_keys",
        }
        assert spec.handlers is not None
    assert registry.named("all") == specs
