"""Network-fault tests need Toxiproxy: HSEPAY_TOXIPROXY names toxiproxy-server (`.ci/stage-netfault.sh`
builds it from the Go module proxy), or it is on PATH. Without it they skip, saying so; with
HSEPAY_TEST_REQUIRE_TOXIPROXY=1 (the CI stage) a missing binary fails them instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hsepay.chaos.netstack import network_stack
from hsepay.chaos.network import find_toxiproxy


@pytest.fixture
def toxiproxy_binary() -> Path:
    binary = find_toxiproxy()
    if binary is None:
        if os.environ.get("HSEPAY_TEST_REQUIRE_TOXIPROXY") == "1":
            pytest.fail("HSEPAY_TEST_REQUIRE_TOXIPROXY=1 but no toxiproxy-server (HSEPAY_TOXIPROXY or PATH)")
        pytest.skip("toxiproxy-server not found: set HSEPAY_TOXIPROXY (.ci/stage-netfault.sh builds it)")
    return binary


@pytest.fixture
def netstack(tmp_path: Path, toxiproxy_binary: Path):
    """PostgreSQL and a broker of this test's own, each behind a proxy (hsepay.chaos.netstack)."""
    with network_stack(tmp_path / "net", toxiproxy_binary) as stack:
        yield stack
