"""The saga's operator commands: `outbox status`, `inbox status|retry`, `audit`, `order create --wait`
with `hsepay relay` and `hsepay consume` running as real processes.

Plain functions: CLI commands call asyncio.run themselves. Each test has its own topics and consumer
groups; the tests that count rows start from empty tables (truncated with a sync connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from hsepay import embedded, migrate
from hsepay.config import get_settings
from hsepay.db import libpq_conninfo
from hsepay.relay.broker import BrokerConfig, ensure_topics
from hsepay.relay.signing import EventSigner
from tests.cli.helpers import invoke, ok, ok_json
from tests.support import event_secrets_env

T = TypeVar("T")
SHUTDOWN_TIMEOUT = 15.0


@pytest.fixture(scope="session")
def broker(data_dir: Path) -> Iterator[str]:
    """The saga tests' broker (HSEPAY_TEST_KAFKA or the embedded one, shared with tests/integration)."""
    external = os.environ.get("HSEPAY_TEST_KAFKA")
    if external:
        yield external
        return
    broker_dir = data_dir / "broker"
    running = embedded.find_broker(broker_dir)
    yield running or embedded.ensure_broker(broker_dir, port=0)
    if not running:
        embedded.stop_broker(broker_dir)


@pytest.fixture
def names() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        "orders_topic": f"cli-orders-{suffix}",
        "payment_status_topic": f"cli-payment-status-{suffix}",
        "group_prefix": f"cli-{suffix}",
    }


@pytest.fixture(autouse=True)
def environment(monkeypatch, db_urls, broker, names, tmp_path):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", db_urls["payments"])
    monkeypatch.setenv("HSEPAY_ORDERS_DB", db_urls["orders"])
    monkeypatch.setenv("HSEPAY_KAFKA", broker)
    monkeypatch.setenv("HSEPAY_KAFKA_IDEMPOTENCE", os.environ.get("HSEPAY_TEST_KAFKA_IDEMPOTENCE", "false"))
    monkeypatch.setenv("HSEPAY_KAFKA_PARTITIONS", "3")
    monkeypatch.setenv("HSEPAY_ORDERS_TOPIC", names["orders_topic"])
    monkeypatch.setenv("HSEPAY_PAYMENT_STATUS_TOPIC", names["payment_status_topic"])
    monkeypatch.setenv("HSEPAY_GROUP_PREFIX", names["group_prefix"])
    monkeypatch.setenv("HSEPAY_DATA_DIR", str(tmp_path / "data"))  # never start an embedded server here
    monkeypatch.setenv("COLUMNS", "200")
    for variable, secret in event_secrets_env().items():
        monkeypatch.setenv(variable, secret)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def empty_tables(db_urls) -> None:
    """Truncate both databases: rows other CLI tests left behind must not count here."""
    for service, url in db_urls.items():
        tables = ", ".join(f'"{t.name}"' for t in migrate.metadata_for(service).sorted_tables)
        with psycopg.connect(libpq_conninfo(url), autocommit=True) as conn:
            conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def sql(db_urls, service: str, statement: str, params: tuple = ()) -> None:
    with psycopg.connect(libpq_conninfo(db_urls[service]), autocommit=True) as conn:
        conn.execute(statement, params)


def new_user() -> str:
    return str(uuid.uuid4())


def funded_user(amount: int) -> str:
    user = new_user()
    ok("account", "create", user)
    if amount:
        ok("account", "deposit", user, str(amount))
    return user


def poll(check: Callable[[], T], *, timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {result!r})")
        time.sleep(0.1)


def produce(broker: str, topic: str, values: list[bytes], key: bytes = b"k") -> None:
    """Publish `values` signed with the orders service's secret, as its relay would (whatever they hold)."""
    signer = EventSigner("orders", os.environ["HSEPAY_ORDERS_EVENT_SECRET"].encode())

    async def body() -> None:
        await ensure_topics(BrokerConfig(broker, False, partitions=3), [topic])
        producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await producer.start()
        try:
            for value in values:
                signature = signer.sign(topic, key, value, {})
                await producer.send_and_wait(topic, value=value, key=key, headers=[("signature", signature.encode())])
        finally:
            await producer.stop()

    asyncio.run(body())


# --- workers as processes ------------------------------------------------------------------------


class Worker:
    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hsepay.cli", *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, marker: str, timeout: float = 30.0) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"{self.args} exited {self.proc.returncode}:\n{self.output()}"
            return marker in self.output()

        poll(ready, timeout=timeout, what=f"`hsepay {' '.join(self.args)}` to start")

    def terminate(self) -> int | None:
        """SIGTERM, then the exit code within SHUTDOWN_TIMEOUT (None: it hung and was killed)."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        finally:
            self._out.close()


@contextlib.contextmanager
def workers(tmp_path: Path, *commands: list[str]) -> Iterator[list[Worker]]:
    """Run `hsepay relay|consume ...` processes; on exit stop them with SIGTERM and require exit 0."""
    started = [Worker(args, tmp_path / f"{'-'.join(args)}.log") for args in commands]
    failed = None
    try:
        for worker in started:
            kind = "relay" if worker.args[0] == "relay" else "consumer"
            worker.wait_ready(f"running {kind} for")
        yield started
    except BaseException as exc:
        failed = exc
        raise
    finally:
        codes = {" ".join(w.args): w.terminate() for w in started}
        if failed is None:
            assert all(code == 0 for code in codes.values()), (
                codes,
                {" ".join(w.args): w.output()[-3000:] for w in started},
            )


# --- outbox status ---------------------------------------------------------------------------------


def test_outbox_status_counts_orders_waiting_for_a_relay(empty_tables, names):
    user = new_user()
    for amount in (5, 6, 7):
        ok("order", "create", user, str(amount))

    report = ok_json("outbox", "status")
    assert set(report) == {"payments", "orders"}
    orders = report["orders"]
    assert {"pending", "oldest_pending_age_s", "topics", "active_relay"} <= orders.keys()
    assert orders["pending"] == 3
    assert orders["topics"][names["orders_topic"]]["pending"] == 3
    assert isinstance(orders["oldest_pending_age_s"], float) and orders["oldest_pending_age_s"] >= 0
    assert isinstance(orders["topics"][names["orders_topic"]]["oldest_age_s"], float)
    assert orders["active_relay"] is None
    assert report["payments"]["pending"] == 0
    assert report["payments"]["oldest_pending_age_s"] is None

    assert set(ok_json("outbox", "status", "orders")) == {"orders"}
    table = ok("outbox", "status", "orders").stdout
    assert "Outbox" in table and names["orders_topic"] in table


# --- inbox status and retry ----------------------------------------------------------------------


def test_inbox_status_reports_counts_and_consumer_lag(empty_tables, broker, names):
    produce(broker, names["orders_topic"], [b"one", b"two"])

    report = ok_json("inbox", "status")
    assert set(report) == {"payments", "orders"}
    for service in report.values():
        assert {"processed", "quarantined", "lag"} <= service.keys()
        assert (service["processed"], service["quarantined"]) == (0, 0)
    assert report["payments"]["lag"] == {names["orders_topic"]: 2}  # nobody has consumed them yet
    assert report["orders"]["lag"] == {names["payment_status_topic"]: 0}
    assert "Inbox" in ok("inbox", "status", "payments").stdout


def test_inbox_retry_with_nothing_quarantined_exits_0(empty_tables):
    assert ok_json("inbox", "retry", "orders") == {"processed": 0, "still_quarantined": 0}
    assert "0 applied, 0 still quarantined" in ok("inbox", "retry", "payments").stdout


def test_inbox_retry_rejects_unknown_service():
    assert invoke("inbox", "retry", "ledger").exit_code == 2


def test_poison_is_quarantined_visible_and_still_quarantined_after_retry(empty_tables, broker, names, tmp_path):
    produce(broker, names["orders_topic"], [b"\x00 definitely not an envelope"])

    with workers(tmp_path, ["consume", "payments"]):

        def quarantined() -> dict | None:
            payments = ok_json("inbox", "status", "payments")["payments"]
            done = payments["quarantined"] == 1 and payments["lag"] == {names["orders_topic"]: 0}
            return payments if done else None

        payments = poll(quarantined, what="the poison message to be quarantined and committed")

    (entry,) = payments["quarantined_recent"]
    assert "not an event envelope" in entry["error"]
    assert entry["topic"] == names["orders_topic"]
    shown = ok("inbox", "status", "payments").stdout
    assert "Quarantined in payments" in shown and entry["event_id"].replace("-", "")[:8] in shown  # a short id

    result = invoke("inbox", "retry", "payments", "--json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {"processed": 0, "still_quarantined": 1}
    assert ok_json("inbox", "status", "payments")["payments"]["quarantined_recent"][0]["attempts"] == 2


# --- audit --------------------------------------------------------------------------------------------


def test_audit_exits_0_when_consistent_and_1_after_a_violation(empty_tables, db_urls):
    user = funded_user(500)
    ok("order", "create", user, "100")  # still created: awaiting a decision is not a violation

    report = ok_json("audit")
    assert report["ok"] is True
    assert report["facts"]["deposits_total"] == 500
    assert report["facts"]["orders_awaiting_decision"] == 1
    assert "conservation" in ok("audit").stdout

    sql(
        db_urls,
        "payments",
        "INSERT INTO ledger_entries (user_id, kind, amount, reference) VALUES (%s, 'deposit', 1, 'forged')",
        (user,),
    )
    result = invoke("audit", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False
    failing = {check["name"] for check in report["checks"] if not check["ok"]}
    assert "balance_equals_ledger" in failing
    human = invoke("audit")
    assert human.exit_code == 1
    assert "balance_equals_ledger" in human.stdout and user in human.stdout


# --- order create --wait against running workers ------------------------------------------------------


def test_order_create_wait_with_relay_and_consume_processes(empty_tables, names, tmp_path):
    rich = funded_user(1000)
    poor = funded_user(10)
    with workers(tmp_path, ["relay", "all"], ["consume", "all"]):
        started = time.monotonic()
        paid = ok_json("order", "create", rich, "250", "--wait", "--timeout", "30")
        elapsed = time.monotonic() - started
        assert (paid["status"], paid["reason"]) == ("success", None)
        assert elapsed < 30

        result = invoke("order", "create", poor, "100", "--wait", "--json", "--timeout", "30")
        assert result.exit_code == 1, (result.stdout, result.stderr)
        refused = json.loads(result.stdout)
        assert (refused["status"], refused["reason"]) == ("failed", "insufficient_funds")

        # The relay marks a row sent just after its ack, so the result may overtake that update.
        def drained() -> dict | None:
            report = ok_json("outbox", "status")
            return report if all(service["pending"] == 0 for service in report.values()) else None

        status = poll(drained, what="both outboxes to drain")
        for service in ("payments", "orders"):
            assert "hsepay-relay" in status[service]["active_relay"]["application_name"]

    assert ok_json("account", "balance", rich)["balance"] == 750
    assert ok_json("account", "balance", poor)["balance"] == 10
    assert ok_json("order", "show", paid["id"])["status"] == "success"
    assert ok_json("audit")["ok"] is True
    inbox = ok_json("inbox", "status")
    assert (inbox["payments"]["processed"], inbox["orders"]["processed"]) == (2, 2)
    assert inbox["payments"]["lag"] == {names["orders_topic"]: 0}
    assert inbox["orders"]["lag"] == {names["payment_status_topic"]: 0}


def test_order_create_wait_for_user_without_account_exits_1(empty_tables, tmp_path):
    with workers(tmp_path, ["relay", "all"], ["consume", "all"]):
        result = invoke("order", "create", new_user(), "5", "--wait", "--json")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    order = json.loads(result.stdout)
    assert (order["status"], order["reason"]) == ("failed", "account_not_found")
