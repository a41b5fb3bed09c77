"""Chaos runs own their engines: a private embedded PostgreSQL (restarted by the pg-restart fault)
and, unless HSEPAY_TEST_KAFKA names a cluster, a private embedded broker (killed by broker faults)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from hsepay import embedded
from hsepay.chaos.faults import EmbeddedPostgres
from hsepay.ports import free_port


@pytest.fixture
def private_postgres(tmp_path: Path):
    """(control, {service: url}) of an embedded PostgreSQL of this test's own."""
    data_dir = tmp_path / "pg-home"
    server = embedded.ensure_postgres(data_dir)
    with psycopg.connect(server, autocommit=True) as conn:
        for name in ("chaos_payments", "chaos_orders"):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = make_url(server)
    urls = {
        "payments": base.set(database="chaos_payments").render_as_string(hide_password=False),
        "orders": base.set(database="chaos_orders").render_as_string(hide_password=False),
    }
    yield EmbeddedPostgres(data_dir), urls
    embedded.stop_postgres(data_dir)


@pytest.fixture
def private_tansu(tmp_path: Path):
    data_dir = tmp_path / "broker-home"
    port = free_port()
    address = embedded.ensure_broker(data_dir, port=port)
    yield data_dir, port, address
    embedded.stop_broker(data_dir)
