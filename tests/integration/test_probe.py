"""The broker probe against the real broker of the run: Apache Kafka when HSEPAY_TEST_KAFKA names one
(CI's second stage), the embedded Tansu (on a free port, in the run's temp data directory) otherwise."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import replace

import pytest

from hsepay.bootstrap.broker import connect_broker
from hsepay.config import Settings
from hsepay.relay.probe import BrokerInfo, BrokerProbeError, choose_idempotence, describe, probe_broker
from hsepay.roles import start_workers
from tests.integration.conftest import wait_final
from tests.support import Saga, open_account, place_order

ON_KAFKA = bool(os.environ.get("HSEPAY_TEST_KAFKA"))


async def test_the_probe_says_what_the_broker_is_and_whether_it_gives_producer_ids(broker):
    info = await probe_broker(broker)
    again = await probe_broker(broker)  # connections warm: what a process pays at start-up
    # KRaft answers a random live broker as "controller": it may differ from one probe to the next
    assert again == replace(info, elapsed_ms=again.elapsed_ms, controller_id=again.controller_id)
    assert again.elapsed_ms < 2_000
    assert info.controller_id in info.node_ids
    line = describe(info, origin="test")
    assert line.startswith(f"broker {broker} (test): ")

    if ON_KAFKA:
        assert not info.looks_like_tansu
        assert info.kafka_cluster_id, info.cluster_id
        assert info.broker_count >= len(broker.split(","))
        assert info.supports_idempotence is True
        assert info.idempotence_refusal is None
        assert "Kafka" in line and "Tansu" not in line
        assert line.endswith(f"; acks=all; idempotence on [probe {info.elapsed_ms:.0f} ms]")
        assert choose_idempotence(info, None) == (True, None)
        assert choose_idempotence(info, True) == (True, None)
    else:
        assert info.looks_like_tansu
        assert info.cluster_id == "tansu_cluster"
        assert not info.kafka_cluster_id
        assert info.broker_count == 1
        assert info.supports_idempotence is False
        assert info.idempotence_refusal == "UnknownError"  # InitProducerId -> UNKNOWN_SERVER_ERROR (-1)
        assert ": Tansu, 1 node, cluster tansu_cluster; acks=all; " in line
        assert "idempotence off (the broker refuses InitProducerId: UnknownError)" in line
        use, warning = choose_idempotence(info, None)
        assert use is False and "refuses InitProducerId (UnknownError), as Tansu does" in warning
        with pytest.raises(BrokerProbeError, match="HSEPAY_KAFKA_IDEMPOTENCE=true"):
            choose_idempotence(info, True)
    assert choose_idempotence(info, False) == (False, None)


async def test_a_broker_that_cannot_be_reached_or_does_not_answer_is_an_error_not_idempotence_off():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(BrokerProbeError, match=f"127.0.0.1:{port}"):
        await probe_broker(f"127.0.0.1:{port}", timeout=10)

    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(BrokerProbeError, match="no answer within 1s"):
            await probe_broker(address, timeout=1)
        assert time.monotonic() - started < 5


def test_a_broker_other_than_tansu_that_refuses_producer_ids_is_not_dropped_silently():
    info = BrokerInfo(
        bootstrap_servers="kafka-1:9092",
        cluster_id="818EvJo6p6WSGBmxnPxc8A",
        controller_id=1,
        node_ids=(1, 2, 3),
        looks_like_tansu=False,
        supports_idempotence=False,
        idempotence_refusal="ClusterAuthorizationFailedError",
        elapsed_ms=12.0,
    )
    use, warning = choose_idempotence(info, None)
    assert use is False
    assert warning.startswith("idempotence OFF: the broker kafka-1:9092 refuses InitProducerId")
    assert "does not look like Tansu" in warning and "IdempotentWrite" in warning
    assert describe(info) == (
        "broker kafka-1:9092: Kafka, 3 nodes, cluster 818EvJo6p6WSGBmxnPxc8A; acks=all; "
        "idempotence off (the broker refuses InitProducerId: ClusterAuthorizationFailedError) [probe 12 ms]"
    )
    assert "idempotence on" in describe(info, idempotence=True)  # what a process that insists would say


async def test_hsepay_kafka_alone_is_enough_whatever_the_broker(
    saga_environ, db_urls, payments_engine, orders_engine, caplog
):
    """HSEPAY_KAFKA without HSEPAY_KAFKA_IDEMPOTENCE: on (Apache Kafka) or off with a warning (Tansu,
    e.g. `hsepay broker` run on its own), said in one start-up line, and an order goes through."""
    environ = {k: v for k, v in saga_environ.items() if k != "HSEPAY_KAFKA_IDEMPOTENCE"}
    # The per-test engines: they empty the outboxes, whose leftover rows from other tests name
    # topics no broker has (Apache Kafka does not create topics on a produce; Tansu does).
    engines = {"payments": payments_engine, "orders": orders_engine}
    settings = Settings.from_env(environ)
    with caplog.at_level(logging.INFO, logger="hsepay.bootstrap"):
        endpoint = await connect_broker(settings)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("hsepay.bootstrap")]
    assert endpoint.idempotence is ON_KAFKA
    assert any(line.startswith(f"broker {endpoint.bootstrap_servers} (HSEPAY_KAFKA): ") for line in lines), lines
    if not ON_KAFKA:
        assert any("idempotence off" in line and "as Tansu does" in line for line in lines), lines

    user = await open_account(engines["payments"], 100)
    order = await place_order(engines["orders"], user, 60, settings.kafka.orders_topic)
    async with start_workers(Saga(settings, db_urls, engines, endpoint).system("payments", "orders")) as workers:
        final = await wait_final(engines["orders"], [order])
    assert final[order] == ("success", None)
    assert all(relay.stats.errors == 0 for relay in workers.relays.values())
