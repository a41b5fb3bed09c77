"""Session-wide real engines: the embedded PostgreSQL (or HSEPAY_TEST_DB) and, for saga tests,
the embedded broker (or HSEPAY_TEST_KAFKA). Each test gets empty tables."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hsepay import embedded, migrate, registry
from hsepay.config import normalise_db_url
from hsepay.db import create_engine

SERVICES = tuple(spec.name for spec in registry.with_database())
_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # pytest's default base temp dir is shared by every run of one user, and each run deletes the
    # oldest ones: two runs on one box would delete each other's embedded PostgreSQL. Give each
    # run its own (unless --basetemp says otherwise) and remove it at the end.
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="hsepay-pytest-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own and not os.environ.get("HSEPAY_TEST_KEEP_TMP"):
        shutil.rmtree(own, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hsepay")


@pytest.fixture(scope="session")
def pg_server(data_dir: Path):
    """libpq URI of a maintenance database on the server the tests use."""
    external = os.environ.get("HSEPAY_TEST_DB")
    if external:
        yield external
        return
    uri = embedded.ensure_postgres(data_dir)
    yield uri
    embedded.stop_postgres(data_dir)


@pytest.fixture(scope="session")
def broker(data_dir):
    external = os.environ.get("HSEPAY_TEST_KAFKA")
    if external:
        yield external
        return
    broker_dir = data_dir / "broker"
    address = embedded.ensure_broker(broker_dir, port=0)
    yield address
    embedded.stop_broker(broker_dir)


@pytest.fixture(scope="session")
def db_urls(pg_server: str) -> dict[str, str]:
    """One fresh, migrated database per service, named for this test run."""
    suffix = uuid.uuid4().hex[:8]
    names = {service: f"hsepay_test_{service}_{suffix}" for service in SERVICES}
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = make_url(pg_server)
    urls = {
        service: normalise_db_url(base.set(database=name).render_as_string(hide_password=False), "test")
        for service, name in names.items()
    }
    for service, url in urls.items():
        migrate.upgrade(service, url)
    yield urls
    with psycopg.connect(pg_server, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def empty_database(pg_server) -> str:
    """The URL of a database that exists but carries no schema, dropped after the test."""
    name = f"hsepay_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield normalise_db_url(make_url(pg_server).set(database=name).render_as_string(hide_password=False), "test")
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest_asyncio.fixture(scope="session")
async def engines(db_urls):
    built = {service: create_engine(url, pool_size=20) for service, url in db_urls.items()}
    yield built
    for engine in built.values():
        await engine.dispose()


async def _truncate(engine, service: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in migrate.metadata_for(service).sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest_asyncio.fixture
async def payments_engine(engines):
    await _truncate(engines["payments"], "payments")
    return engines["payments"]


@pytest_asyncio.fixture
async def orders_engine(engines):
    await _truncate(engines["orders"], "orders")
    return engines["orders"]
