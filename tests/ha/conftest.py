"""The HA stage's fixtures: a Patroni cluster (3 PostgreSQL 15 nodes on etcd, HAProxy in front) from
Debian's packages, and a private embedded broker per test.

They run only with HSEPAY_TEST_REQUIRE_HA=1 (set by .ci/stage-ha.sh), where a missing binary fails
them; elsewhere they are skipped, even where the packages happen to be installed: the README's
`pytest` must not grow by the stage's ~12 minutes on a machine that ran the stage once.

The broker is the embedded Tansu: the broker is not what these runs break, it starts in a second
from a wheel, and it leaves the two cores to three PostgreSQL servers, three Patroni daemons and
three etcd members (a 3-node Apache Kafka would add three JVMs).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio
from psycopg import sql

from hsepay import embedded
from hsepay.chaos.faults import EmbeddedTansu
from hsepay.ports import free_ports
from tests.ha.cluster import DEFAULT_TIMING, HaCluster, missing_binaries, postgres_user_exists

REQUIRE = "HSEPAY_TEST_REQUIRE_HA"
PACKAGES = "patroni etcd-server etcd-client postgresql-15 haproxy"


def _skip_or_fail() -> None:
    if not os.environ.get(REQUIRE):
        pytest.skip(f"the CI stage ha runs these: .ci/stage-ha.sh (or {REQUIRE}=1 with: apt-get install {PACKAGES})")
    missing = missing_binaries()
    if os.geteuid() == 0 and not postgres_user_exists():
        missing.append("the postgres user (PostgreSQL refuses to run as root)")
    if not missing:
        return
    pytest.fail(f"{', '.join(missing)} missing but {REQUIRE} is set: apt-get install {PACKAGES}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def cluster():
    """A synchronous-mode cluster (Patroni synchronous_mode), shared by the stage's tests (its start
    costs ~25 s); each test leaves it healthy (a writable primary, two streaming replicas, one
    synchronous) and in synchronous mode."""
    _skip_or_fail()
    timing = dict(DEFAULT_TIMING)
    # e.g. HSEPAY_TEST_HA_TIMING='{"ttl": 30, "loop_wait": 10, "retry_timeout": 10}' (Patroni's defaults),
    # to measure what those settings cost a failover (docs/OPERATIONS.md).
    timing.update(json.loads(os.environ.get("HSEPAY_TEST_HA_TIMING") or "{}"))
    async with HaCluster.create(timing=timing) as ha:
        yield ha


@pytest.fixture
def scratch_databases(cluster):
    """A fresh pair of databases on the cluster for one test: {service: name}."""
    suffix = uuid.uuid4().hex[:8]
    names = {service: f"ha_{service}_{suffix}" for service in ("payments", "orders")}
    with psycopg.connect(cluster.multi_host_url("postgres"), autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield names
    with psycopg.connect(cluster.multi_host_url("postgres"), autocommit=True, connect_timeout=30) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def private_tansu(tmp_path: Path):
    data_dir = tmp_path / "broker-home"
    (port,) = free_ports(1)
    address = embedded.ensure_broker(data_dir, port=port)
    yield EmbeddedTansu(data_dir, port), address
    embedded.stop_broker(data_dir)
