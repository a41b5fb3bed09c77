"""Operations tests: the saga fixtures of tests/integration (real PostgreSQL and broker), and the
external binaries some tests need (Prometheus, docker-compose): present, or a skip naming the package
(a failure instead where CI sets HSEPAY_TEST_REQUIRE_<NAME>=1)."""

from __future__ import annotations

import os
import shutil

import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from hsepay.api.app import create_orders_app, create_payments_app
from tests.integration.conftest import saga, saga_environ, saga_settings  # noqa: F401  (fixtures)


def binary(name: str, package: str, require: str) -> str:
    """The path of `name`; a skip naming its Debian package, or a failure when $`require` is set."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get(require):
        pytest.fail(f"{name} is not installed but {require} is set: apt-get install {package}")
    pytest.skip(f"needs the {name} binary: apt-get install {package} (Debian)")


@pytest_asyncio.fixture
async def apis(saga):  # noqa: F811
    """Both APIs in-process on the test databases, with their lifespans (metrics and health sources)."""
    kafka = saga.settings.kafka
    payments = create_payments_app(saga.engines["payments"])
    orders = create_orders_app(saga.engines["orders"], orders_topic=kafka.orders_topic)
    async with AsyncTestClient(app=payments) as p, AsyncTestClient(app=orders) as o:
        yield p, o


from tests.e2e.conftest import hsepay_env  # noqa: E402, F401  (fixture)
