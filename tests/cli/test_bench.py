"""`hsepay bench` runs the whole saga on scratch databases and audits the result."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from hsepay import embedded
from hsepay.cli import app
from hsepay.config import get_settings

runner = CliRunner()


def test_bench_small_run_reports_figures_and_a_clean_audit(monkeypatch, data_dir, broker):
    monkeypatch.setenv("HSEPAY_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HSEPAY_KAFKA", broker)
    monkeypatch.setenv("HSEPAY_KAFKA_IDEMPOTENCE", "false")
    monkeypatch.delenv("HSEPAY_PAYMENTS_DB", raising=False)
    monkeypatch.delenv("HSEPAY_ORDERS_DB", raising=False)
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["bench", "--orders", "200", "--users", "10", "--latency-samples", "5", "--json"])
    finally:
        get_settings.cache_clear()
        if os.environ.get("HSEPAY_TEST_DB"):  # bench started an embedded server of its own: stop it
            embedded.stop_postgres(data_dir)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["audit_ok"] is True
    # 10 users funded for 90% of their 20 orders: 18 succeed and 2 are refused each, plus warm-up and timed orders.
    assert figures["failed"] == 20
    assert figures["succeeded"] == 180 + 1 + 5
    assert figures["drain_orders_per_s"] > 0 and figures["latency_samples"] == 5
