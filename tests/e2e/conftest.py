"""Real processes: `hsepay serve` / `hsepay up` started as subprocesses, spoken to over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from hsepay.ports import free_port  # noqa: F401  (the e2e and ops tests import it from here)
from tests.support import event_secrets_env


@pytest.fixture
def hsepay_env(db_urls, data_dir) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    inherited = {k: v for k, v in os.environ.items() if k != "HSEPAY_AUTH_SECRET"}  # auth off unless a test says
    return {
        **inherited,
        # These tests poll as fast as they like from one address; the limit has tests of its own.
        "HSEPAY_RATE_LIMIT": "0",
        "HSEPAY_PAYMENTS_DB": db_urls["payments"],
        "HSEPAY_ORDERS_DB": db_urls["orders"],
        "HSEPAY_DATA_DIR": str(data_dir),
        "HSEPAY_ORDERS_TOPIC": f"orders-{suffix}",
        "HSEPAY_PAYMENT_STATUS_TOPIC": f"payment-status-{suffix}",
        "HSEPAY_GROUP_PREFIX": f"e2e-{suffix}",
        "HSEPAY_KAFKA_PARTITIONS": "3",
        # A shared broker (HSEPAY_KAFKA) needs them; on the embedded one they replace the generated ones.
        **event_secrets_env(),
    }


@contextlib.contextmanager
def running(
    args: list[str], env: dict[str, str], ready_urls: list[str], timeout: float = 60
) -> Iterator[subprocess.Popen]:
    """Start `hsepay ARGS`, wait until every ready URL answers 200, stop it with SIGINT at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hsepay.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + timeout
        pending = list(ready_urls)
        while pending:
            if proc.poll() is not None:
                raise AssertionError(f"hsepay {' '.join(args)} exited {proc.returncode}: {proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"hsepay {' '.join(args)} not ready after {timeout}s")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(pending[0], timeout=1).status_code == 200:
                    pending.pop(0)
                    continue
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
