"""A short soak (issue 22, item 6): a steady load with a fault every 30 s — network faults on each
link, a PostgreSQL restart, kill -9 of roles — while every role's memory and file descriptors,
each database's connections and each consumer group's lag are sampled every 10 s. What is checked
is that every series stays flat (its fitted growth within hsepay.chaos.resources.FLAT_LIMITS), not
a timing. HSEPAY_TEST_SOAK_SECONDS lengthens it; the curves go to HSEPAY_CHAOS_REPORT_DIR.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hsepay.bench.svg import series_svg
from hsepay.chaos.run import run_chaos
from hsepay.chaos.soak import periodic_plan, write_curves
from tests.chaos.reporting import record as _record
from tests.chaos.test_chaos_embedded import ROLES
from tests.netfault.test_network_faults import network_setup

pytestmark = pytest.mark.chaos

KINDS = ["net-silent", "kill-role", "net-cut", "net-reset", "pg-restart", "net-latency"]


async def test_a_short_soak_keeps_memory_descriptors_connections_and_lag_flat(tmp_path, netstack):
    duration = float(os.environ.get("HSEPAY_TEST_SOAK_SECONDS", "200"))
    setup = network_setup(netstack, tmp_path)
    plan = periodic_plan(52, duration, 30.0, roles=ROLES, kinds=KINDS)  # each kind once in 200 s
    report = await run_chaos(
        setup, seed=52, orders=round(20 * duration), rate=20, users=40, plan=plan, sample_every=10.0
    )
    _record("soak-short", report)
    if os.environ.get("HSEPAY_CHAOS_REPORT_DIR"):
        write_curves(report, Path(os.environ["HSEPAY_CHAOS_REPORT_DIR"]), series_svg, prefix="soak-short")
    kinds = {name.split(":", 1)[0] for name in report.resources}
    assert kinds == {"rss_mb", "fds", "db_connections", "consumer_lag"}, kinds
    assert {f"rss_mb:{role}" for role in ROLES} <= set(report.resources)
    # Kept as taken, so a run that dies keeps its curves; the sample after the drain comes last.
    journal = json.loads((tmp_path / "resources.json").read_text())["series"]
    assert {name: [tuple(p) for p in points] for name, points in journal.items()} == report.resources
    assert not report.not_flat, {name: report.flatness[name] for name in report.not_flat}
    assert report.passed, report.verdict()
