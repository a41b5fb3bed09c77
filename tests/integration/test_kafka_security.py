"""Kafka with SASL/SCRAM (CI stage 2 starts Apache Kafka with a SCRAM listener, KAFKA_SCRAM_USERS).

HSEPAY_TEST_KAFKA_SASL names that listener's bootstrap servers and HSEPAY_TEST_KAFKA_SASL_USER the
`name:password` it accepts; `.ci/run` sets both and HSEPAY_TEST_REQUIRE_SASL=1, which turns the skip
into a failure there. Without them (the embedded broker has no SASL) these tests are skipped.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from hsepay.bootstrap.broker import connect_broker
from hsepay.config import ConfigError, Settings
from hsepay.relay.probe import BrokerRefusedLogin, probe_broker
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final
from tests.support import Saga, open_account, place_order

SASL = os.environ.get("HSEPAY_TEST_KAFKA_SASL")
USER = os.environ.get("HSEPAY_TEST_KAFKA_SASL_USER", ":")
if not SASL:
    if os.environ.get("HSEPAY_TEST_REQUIRE_SASL"):
        raise RuntimeError("HSEPAY_TEST_REQUIRE_SASL is set but HSEPAY_TEST_KAFKA_SASL is not")
    pytestmark = pytest.mark.skip(reason="needs an Apache Kafka SASL listener (CI stage 2 starts one)")


def _sasl_environ(saga_environ: dict[str, str], mechanism: str, password: str | None = None) -> dict[str, str]:
    name, _, secret = USER.partition(":")
    return {
        **saga_environ,
        "HSEPAY_KAFKA": SASL,
        "HSEPAY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "HSEPAY_KAFKA_SASL_MECHANISM": mechanism,
        "HSEPAY_KAFKA_SASL_USERNAME": name,
        "HSEPAY_KAFKA_SASL_PASSWORD": password if password is not None else secret,
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
async def test_the_saga_runs_over_a_scram_listener(saga_environ, db_urls, engines, mechanism):
    settings = Settings.from_env(_sasl_environ(saga_environ, mechanism))
    endpoint = await connect_broker(settings)
    assert endpoint.idempotence is True
    user = await open_account(engines["payments"], 100)
    order = await place_order(engines["orders"], user, 40, settings.kafka.orders_topic)
    async with start_workers(Saga(settings, db_urls, engines, endpoint).system("payments", "orders")):
        final = await wait_final(engines["orders"], [order])
    assert final[order] == ("success", None)


async def test_a_wrong_password_is_one_config_error_not_a_retry(saga_environ, db_urls, engines):
    settings = Settings.from_env(_sasl_environ(saga_environ, "SCRAM-SHA-512", password="not-the-password"))
    with pytest.raises(BrokerRefusedLogin, match="refused the login: .*invalid credentials"):
        await probe_broker(SASL, timeout=15, **settings.kafka.security_options())
    with pytest.raises(ConfigError, match="^HSEPAY_KAFKA_SASL_USERNAME/PASSWORD: broker .* refused the login"):
        await asyncio.wait_for(connect_broker(settings), timeout=30)  # at once, not after retries


def test_sasl_without_credentials_is_a_config_error(saga_environ):
    environ = _sasl_environ(saga_environ, "SCRAM-SHA-512")
    del environ["HSEPAY_KAFKA_SASL_PASSWORD"]
    with pytest.raises(ConfigError, match="HSEPAY_KAFKA_SASL_PASSWORD"):
        Settings.from_env(environ).kafka.security_options()
