"""Logs: JSON lines off a terminal, Rich on one, the saga's ids on every saga line, no secrets."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import func, update

from hsepay import log_context
from hsepay.observability import logs
from hsepay.orders import operations as orders_ops
from hsepay.orders.tables import outbox as orders_outbox
from hsepay.relay.envelope import new_message
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final
from tests.support import kafka_producer, open_account, place_order, poll_until, publish, relay_signer

SAGA_LOGGERS = ("hsepay.orders", "hsepay.payments", "hsepay.relay.consumer")


@pytest.fixture
def json_lines():
    """hsepay's logging, configured as `main` does it (JSON), into a buffer; restored afterwards."""
    root, hsepay = logging.getLogger(), logging.getLogger("hsepay")
    saved = (list(root.handlers), root.level, hsepay.level)
    buffer = io.StringIO()
    logs.configure("debug", "json", stream=buffer, secrets=("s3cret-value",))

    def read() -> list[dict]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    yield read
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    hsepay.setLevel(saved[2])


def test_json_lines_carry_context_and_extra_fields(json_lines):
    log = logging.getLogger("hsepay.test")
    with log_context.bound(request_id="r-1", order_id="o-1"):
        log.info("hello %s", "world", extra={"event_id": "e-1"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = json_lines()
    assert first["message"] == "hello world" and first["level"] == "info" and first["logger"] == "hsepay.test"
    assert (first["request_id"], first["order_id"], first["event_id"]) == ("r-1", "o-1", "e-1")
    assert first["ts"].endswith("+00:00")
    assert "order_id" not in second  # the context ended with its block
    assert "ValueError: boom" in second["exception"]


def test_secrets_never_reach_a_line(json_lines, monkeypatch):
    log = logging.getLogger("hsepay.test")
    log.warning("cannot use postgresql://hsepay:pa55word@db:5432/orders")
    log.warning("headers: {'authorization': 'Bearer eyJhbGciOi.payload.sig', 'x': 1}")
    log.warning("Authorization: Basic dXNlcjpwYXNz")
    log.warning("secret is s3cret-value", extra={"url": "postgres://u:hunter22@h/db"})
    log.warning("connect failed: host=db user=hsepay password=t0psecret dbname=orders")
    log.warning("FATAL: password authentication failed for user hsepay")
    text = json.dumps(json_lines())
    assert "password authentication failed" in text  # the driver's message stays readable
    for secret in ("pa55word", "eyJhbGciOi", "dXNlcjpwYXNz", "s3cret-value", "hunter22", "t0psecret"):
        assert secret not in text, secret
    assert "postgresql://hsepay:***@db:5432/orders" in text


def test_console_format_is_readable_with_its_fields():
    buffer = io.StringIO()
    handler = logs._console_handler(buffer)
    record = logging.LogRecord("hsepay.x", logging.INFO, __file__, 1, "settled %s", ("o-1",), None)
    record.order_id = "o-1"
    handler.emit(record)
    assert "settled o-1" in buffer.getvalue() and "order_id=o-1" in buffer.getvalue()


def test_format_follows_the_terminal_and_log_level_is_an_option():
    script = "import logging; from hsepay.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", script, "--log-level", "loud", "stop"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--log-level" in result.stderr
    probe = (
        "from hsepay.observability import logs; import logging; "
        "logs.configure('info', 'auto'); logging.getLogger('hsepay.t').info('x')"
    )
    piped = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert json.loads(piped.stderr.splitlines()[-1])["message"] == "x"  # stderr is a pipe here: JSON


async def test_every_saga_line_carries_order_event_and_correlation_ids(
    saga, payments_engine, orders_engine, json_lines
):
    kafka = saga.settings.kafka
    rich = await open_account(payments_engine, 1000)
    paid = await place_order(orders_engine, rich, 100, kafka.orders_topic)
    refused = await place_order(orders_engine, rich, 5000, kafka.orders_topic)
    # A request the payments handler cannot apply (the amount overflows the ledger): retried, then quarantined.
    poison_order = str(uuid.uuid4())
    poison = new_message(
        topic=kafka.orders_topic,
        key=str(rich),
        event_type="order.created",
        data={"order_id": poison_order, "user_id": str(rich), "amount": 10**19},
        correlation_id=poison_order,
    )
    async with start_workers(saga.system("payments", "orders")) as workers:
        async with kafka_producer(kafka.bootstrap_servers) as producer:
            await publish(producer, poison, signer=relay_signer(saga, "orders"))
        await wait_final(orders_engine, [paid, refused], timeout=60)
        await poll_until(
            lambda: _true(workers.consumers["payments"].stats.quarantined >= 1), timeout=60, what="the quarantine"
        )
    async with orders_engine.begin() as conn:  # a re-drive of an order still created
        stuck = await orders_ops.create_order(conn, user_id=rich, amount=1, description="", topic=kafka.orders_topic)
        await conn.execute(update(orders_outbox).values(sent_at=func.now()))  # as if relayed, then lost
    async with orders_engine.begin() as conn:
        assert await orders_ops.redrive_stale_orders(conn, older_than=0.0, topic=kafka.orders_topic) == 1

    saga = [
        line for line in json_lines() if line["logger"].startswith(SAGA_LOGGERS) and "batch of" not in line["message"]
    ]
    about = {line["order_id"] for line in saga if "order_id" in line}
    assert {str(paid), str(refused), poison_order, str(stuck.id)} <= about
    kinds = {
        word
        for line in saga
        for word in ("settled", "payment for order", "applied", "quarantin", "re-sending")
        if word in line["message"]
    }
    assert kinds == {"settled", "payment for order", "applied", "quarantin", "re-sending"}
    for line in saga:
        assert {"order_id", "event_id", "correlation_id"} <= line.keys(), line


async def _true(value: bool) -> bool:
    return value
