"""`hsepay bench`: every scenario runs small against real roles and engines, and audits clean.

These check that the benchmark works and tells the truth (counts, audit, report), never a timing:
`test_quick_runs_every_scenario` is the CI smoke run of `hsepay bench --quick`.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading

import pytest
from typer.testing import CliRunner

from hsepay import embedded
from hsepay.cli import app
from hsepay.config import get_settings

runner = CliRunner()


@pytest.fixture
def bench_env(request, monkeypatch, data_dir, broker):
    """The test's engines (HSEPAY_TEST_DB / HSEPAY_TEST_KAFKA or the embedded ones), nothing of the caller's."""
    if not os.environ.get("HSEPAY_TEST_DB"):
        # The bench uses the embedded server of data_dir: the session's own, which stops it at the end
        # (started by the bench alone, it would outlive the run and its deleted directory).
        request.getfixturevalue("pg_server")
    for name in [k for k in os.environ if k.startswith("HSEPAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HSEPAY_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HSEPAY_KAFKA", broker)
    if os.environ.get("HSEPAY_TEST_KAFKA_IDEMPOTENCE") is None:
        monkeypatch.setenv("HSEPAY_KAFKA_IDEMPOTENCE", "false")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
    if os.environ.get("HSEPAY_TEST_DB"):  # bench started an embedded server of its own: stop it
        embedded.stop_postgres(data_dir)


def _invoke(*args: str) -> dict:
    result = runner.invoke(app, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _processes(figures: dict) -> dict[str, dict]:
    return {p["name"]: p for p in figures["processes"]}


def _assert_every_role_measured(figures: dict, roles: set[str]) -> None:
    measured = _processes(figures)
    assert roles <= set(measured), measured
    for name in roles:
        assert measured[name]["max_rss_mb"] > 10, measured[name]  # a live Python process, not a stub
        # Run delay from the kernel: a number for every live role (0 is possible on an idle box).
        assert isinstance(measured[name]["waited_for_cpu_s"], float) and measured[name]["waited_for_cpu_s"] >= 0


SAGA_ROLES = {"api-orders", "api-payments", "relay-orders", "relay-payments", "consume-orders", "consume-payments"}


def test_quick_runs_every_scenario_and_writes_the_report(bench_env, tmp_path):
    report = tmp_path / "bench.html"
    figures = _invoke("--quick", "--report", str(report))

    assert figures["ok"] is True
    scenarios = {s["scenario"]: s for s in figures["scenarios"]}
    assert list(scenarios) == ["latency", "http", "drain", "relay"]
    for scenario in scenarios.values():
        assert scenario["verdict"] == {**scenario["verdict"], "ok": True, "problems": []}
        assert scenario["context"]["load_before"] and scenario["context"]["cpus"] >= 1

    latency = scenarios["latency"]
    assert latency["samples"] == 20 and latency["late"] == 0
    assert latency["first_order_ms"] > 0  # timed on the fresh stack, before the others
    assert latency["end_to_end"]["p50_ms"] >= latency["accepted"]["p50_ms"] > 0
    assert latency["statuses"] == {"202": 20}
    # seen as a client sees it: each order polled with GET /order/{id} until final, every GET counted
    assert latency["watch"] == "http" and latency["gets"] >= 20 and set(latency["get_statuses"]) == {"200"}
    _assert_every_role_measured(latency, SAGA_ROLES)

    http = scenarios["http"]
    assert http["requests"] > 0 and http["statuses"] == {"202": http["requests"]}
    assert http["transport_errors_total"] == {}
    assert http["orders_accepted"] == http["orders_in_database"] == http["statuses_total"]["202"]
    assert len(http["clients"]) == 2 and all(c["cpu_window_s"] > 0 for c in http["clients"])
    assert http["latency"]["p99_ms"] >= http["latency"]["p50_ms"] > 0

    drain = scenarios["drain"]
    (run,) = drain["runs"]
    # 10 users funded for 90% of their 30 orders each: 27 succeed and 3 are refused, per user.
    assert (run["orders"], run["succeeded"], run["failed"]) == (300, 270, 30)
    assert run["orders_per_s"] > 0 and set(run["series"]) >= {"orders final (orders consumer)"}
    assert drain["verdict"]["audit"]["facts"]["orders_in_flight"] == 0

    relay = scenarios["relay"]
    assert relay["rows"] == 2000 and relay["events_per_s"] > 0
    facts = relay["verdict"]["audit"]
    assert facts["missing"] == facts["unknown"] == facts["out_of_order"] == 0
    assert facts["distinct"] == 2000
    assert set(_processes(relay)) >= {"relay-orders"}

    html = report.read_text()
    assert html.count("<svg") >= 5
    assert 'class="bar"' in html  # a latency histogram
    assert 'class="line"' in html  # rates over time
    assert "<script" not in html and "<link" not in html and "src=" not in html  # self-contained


def test_drain_in_one_process_counts_every_order_of_each_backlog(bench_env):
    figures = _invoke("drain", "--one-process", "--orders", "200", "--orders", "100", "--users", "10")

    assert figures["ok"] is True
    first, second = figures["runs"]
    # 10 users funded for 90% of their orders (20, then 10 each): 18 and 9 succeed, 2 and 1 are refused.
    assert (first["orders"], first["succeeded"], first["failed"]) == (200, 180, 20)
    assert (second["orders"], second["succeeded"], second["failed"]) == (100, 90, 10)
    assert first["drain_s"] > 0 and first["orders_per_s"] > 0
    assert figures["cost_ratio_last_to_first"] == round(second["orders_per_s"] / first["orders_per_s"], 3)
    assert "up" in _processes(first) and "api-orders" not in _processes(first)
    assert figures["context"]["layout"] == "everything in one process (hsepay up)"


def test_http_api_only_starts_the_workers_after_the_load_and_settles_every_order(bench_env):
    figures = _invoke("http", "--api-only", "--connections", "4", "--duration", "1", "--warmup", "0.2", "--users", "5")

    assert figures["ok"] is True and figures["workers_during_load"] is False
    assert figures["orders_accepted"] == figures["orders_in_database"] == figures["statuses_total"]["202"] > 0
    measured = set(_processes(figures))
    assert {"api-orders", "api-payments"} <= measured  # the load ran against the APIs alone
    assert not measured & {"relay-orders", "relay-payments", "consume-orders", "consume-payments"}
    assert figures["verdict"]["audit"]["facts"]["orders_in_flight"] == 0  # settled once the workers ran


def test_http_read_gets_orders_of_their_own_users(bench_env):
    figures = _invoke(
        "http", "--read", "--auth", "--connections", "4", "--duration", "1", "--warmup", "0.2", "--users", "5"
    )
    assert figures["ok"] is True and "GET" in figures["target"]
    assert figures["statuses_total"] == {"200": sum(figures["statuses_total"].values())} and figures["requests"] > 0
    assert figures["orders_in_database"] == 0  # reads place nothing


def test_latency_with_background_reads_in_one_process(bench_env):
    figures = _invoke("latency", "--one-process", "--samples", "10", "--users", "5", "--reads", "200")

    assert figures["ok"] is True and figures["samples"] == 10
    reads = figures["background_reads"]
    assert reads["rate_asked"] == 200 and reads["statuses"] == {"200": sum(reads["statuses"].values())}
    assert sum(reads["statuses"].values()) > 0 and reads["transport_errors"] == {}
    assert any(p["name"].startswith("read client") for p in figures["processes"])


def test_latency_seen_from_the_database(bench_env):
    figures = _invoke("latency", "--watch", "db", "--samples", "5", "--users", "5")
    assert figures["ok"] is True and figures["watch"] == "db" and figures["gets"] == 0


def test_http_with_tokens(bench_env):
    figures = _invoke(
        "http", "--auth", "--connections", "4", "--clients", "2", "--duration", "1", "--warmup", "0.2", "--users", "5"
    )
    assert figures["ok"] is True
    assert figures["statuses"] == {"202": figures["requests"]} and figures["requests"] > 0  # every token accepted
    assert figures["orders_in_database"] == figures["statuses_total"]["202"]


def test_relay_started_cold_relays_every_row_once_and_in_order(bench_env):
    figures = _invoke("relay", "--cold", "--rows", "500")

    assert figures["ok"] is True and figures["rows"] == 500 and figures["events_per_s"] > 0
    facts = figures["verdict"]["audit"]
    assert (facts["distinct"], facts["missing"], facts["out_of_order"]) == (500, 0, 0)
    assert "start-up timed" in figures["context"]["layout"]
    # counted from the process's birth: its imports alone take a good part of a CPU second
    assert _processes(figures)["relay-orders"]["cpu_s"] > 0.2


def test_http_against_any_target_is_not_audited(bench_env):
    """--target loads another server with the same client (here a stand-in answering 202)."""
    loop = asyncio.new_event_loop()
    answered = []

    class Stub(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.buffer = transport, b""

        def data_received(self, data):
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, _, rest = self.buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) < length:
                    return
                self.buffer = rest[length:]
                answered.append(1)
                self.transport.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")

    server = loop.run_until_complete(loop.create_server(Stub, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        figures = _invoke(
            "http", "--target", f"http://127.0.0.1:{port}/orders", "--connections", "4", "--duration", "0.5",
            "--warmup", "0.1",
        )  # fmt: skip
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert figures["ok"] is True and figures["verdict"]["notes"][0] == "external target: not audited"
    assert figures["statuses"]["202"] == figures["requests"] > 0
    assert sum(figures["statuses_total"].values()) == len(answered)
    assert figures["processes"] == []
