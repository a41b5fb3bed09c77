"""The broker probe against the real broker of the run: Apache Kafka when HSEPAY_TEST_KAFKA names one
(CI's second stage), the embedded Tansu (on a free port, in the run's temp data directory) otherwise."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace

import pytest

from hsepay.broker_probe import BrokerInfo, BrokerProbeError, choose_idempotence, describe, probe_broker

ON_KAFKA = bool(os.environ.get("HSEPAY_TEST_KAFKA"))


async def test_the_probe_says_what_the_broker_is_and_whether_it_gives_producer_ids(broker):
    info = await probe_broker(broker)
    again = await probe_broker(broker)  # connections warm: what a process pays at start-up
    assert again == replace(info, elapsed_ms=again.elapsed_ms)
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
        assert f": Tansu, 1 node, cluster tansu_cluster, controller {info.controller_id}; acks=all; " in line
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
        "broker kafka-1:9092: Kafka, 3 nodes, cluster 818EvJo6p6WSGBmxnPxc8A, controller 1; acks=all; "
        "idempotence off (the broker refuses InitProducerId: ClusterAuthorizationFailedError) [probe 12 ms]"
    )
    assert "idempotence on" in describe(info, idempotence=True)  # what a process that insists would say
