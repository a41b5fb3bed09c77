"""Tracing: one order is one trace across both services; off, OpenTelemetry is not even imported."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import uuid

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hsepay.config import ObservabilitySettings
from hsepay.observability import tracing
from hsepay.roles import start_workers
from tests.support import order_created_row, poll_until


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.enable(SimpleSpanProcessor(exporter), service_name="hsepay-test")
    yield exporter
    tracing.disable()


async def test_one_order_is_one_trace_across_both_services(saga, apis, orders_engine, spans):
    payments, orders = apis
    user = str(uuid.uuid4())
    await payments.post("/accounts", json={"user_id": user})
    await payments.post(f"/accounts/{user}/deposit", json={"amount": 100})
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    accepted = await orders.post(
        "/orders",
        json={"user_id": user, "amount": 40},
        headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"},
    )
    order_id = accepted.json()["id"]
    row = await order_created_row(orders_engine, uuid.UUID(order_id))
    assert row.headers["traceparent"].split("-")[1] == caller_trace  # the outbox row carries the trace

    async with start_workers(saga.system("payments", "orders")):

        async def settled_span():
            return [
                s
                for s in spans.get_finished_spans()
                if s.name.startswith("process ") and s.attributes.get("hsepay.service") == "orders"
            ]

        await poll_until(settled_span, timeout=60, what="the orders consumer's span")
        assert (await orders.get(f"/orders/{order_id}")).json()["status"] == "success"

    finished = spans.get_finished_spans()
    in_trace = [s for s in finished if format(s.context.trace_id, "032x") == caller_trace]
    by_name = {(s.name, s.attributes.get("hsepay.service")) for s in in_trace}
    kafka = saga.settings.kafka
    assert ("POST /orders", "orders") in by_name
    assert (f"process {kafka.orders_topic}", "payments") in by_name
    assert (f"create {kafka.payment_status_topic}", None) in by_name
    assert (f"process {kafka.payment_status_topic}", "orders") in by_name
    # Parent links, not only a shared id: payments' span is a child of the order.created message's span.
    ids = {s.context.span_id: s for s in in_trace}
    process_payments = next(s for s in in_trace if s.name == f"process {kafka.orders_topic}")
    assert ids[process_payments.parent.span_id].name == f"create {kafka.orders_topic}"
    assert ids[ids[process_payments.parent.span_id].parent.span_id].name == "POST /orders"


def test_tracing_is_off_by_default_and_imports_nothing_when_off():
    assert not tracing.wanted(ObservabilitySettings(), env={})
    assert tracing.wanted(ObservabilitySettings(), env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not tracing.wanted(ObservabilitySettings(tracing=False), env={"OTEL_EXPORTER_OTLP_ENDPOINT": "x"})
    probe = (
        "import sys\n"
        "from hsepay.config import ObservabilitySettings\n"
        "from hsepay.observability import logs, tracing\n"
        "from hsepay.api.app import create_orders_app\n"
        "from hsepay.gateway import create_gateway_app\n"
        "import hsepay.cli, hsepay.roles\n"
        "logs.configure('info', 'json')\n"
        "assert tracing.enable_from(ObservabilitySettings()) is False\n"
        "create_gateway_app()\n"
        "from hsepay.relay.envelope import new_message\n"
        "message = new_message(topic='t', key='k', event_type='e', data={}, correlation_id='c')\n"
        "assert 'traceparent' not in message.headers\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.trace', 'opentelemetry.sdk'))))\n"
    )
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    # Litestar itself imports a few OpenTelemetry constants (semconv) when the package is installed;
    # the tracing API and SDK, which cost per span, stay out.
    assert result.stdout.strip() == "[]"


def test_spans_are_exported_over_otlp_when_an_endpoint_is_set(tmp_path):
    """`main`'s path: OTEL_EXPORTER_OTLP_ENDPOINT alone turns tracing on; spans reach the collector
    (here a stand-in that records what is POSTed to /v1/traces)."""
    pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.http", reason="the tracing extra: pip install hsepay[tracing]"
    )
    received: list[tuple[str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    probe = (
        "from hsepay.observability import logs, tracing\n"
        "settings = logs.settings_or_defaults()\n"
        "assert tracing.enable_from(settings)\n"
        "from hsepay.relay.envelope import new_message\n"
        "message = new_message(topic='orders', key='k', event_type='order.created', data={}, correlation_id='c')\n"
        "print(message.headers['traceparent'])\n"
        "tracing.disable()\n"  # flushes the batch processor
    )
    env = {"PATH": "/usr/bin:/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    try:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    trace_id = result.stdout.strip().split("-")[1]
    assert [path for path, _ in received] == ["/v1/traces"]
    assert bytes.fromhex(trace_id) in received[0][1]  # the protobuf carries the span's trace id
