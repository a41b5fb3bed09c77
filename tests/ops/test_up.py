"""`hsepay up` and the gateway: started with everything, left out with --no-gateway."""

from __future__ import annotations

import json
import signal
import socket

import httpx

from tests.e2e.conftest import free_port, running


def test_up_without_gateway_leaves_its_port_free_and_logs_json_off_a_terminal(hsepay_env, broker):
    env = {**hsepay_env, "HSEPAY_KAFKA": broker, "HSEPAY_KAFKA_IDEMPOTENCE": "false"}
    pay, ords, gate = free_port(), free_port(), free_port()
    args = ["up", "--payments-port", str(pay), "--orders-port", str(ords), "--gateway-port", str(gate), "--no-gateway"]
    with running(args, env, [f"http://127.0.0.1:{ords}/health/ready"]) as up:
        ready = httpx.get(f"http://127.0.0.1:{pay}/health/ready").json()
        assert ready["checks"]["consumer.orders"]["joined"] and "upstreams" not in ready["checks"]
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", gate))  # nobody holds the gateway's port
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        output = up.stdout.read().decode().splitlines()
    logged = [json.loads(line) for line in output if line.startswith("{")]
    assert any(line["logger"].startswith("hsepay.bootstrap") and "broker" in line["message"] for line in logged)
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in logged)
    assert not any(line.startswith("gateway API") for line in output)
