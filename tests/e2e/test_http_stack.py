"""One hardened HTTP/1.1 stack for every way hsepay serves (issue 18): `hsepay up` (granian embedded in
its event loop) and `hsepay serve` (granian worker processes), probed with raw sockets.

Each refuses a body framed by both Content-Length and Transfer-Encoding (and serves nothing of what
follows it: no request smuggling) and any body that does not say its length (411), refuses folded
header lines and HTTP/0.9 request lines, and closes a connection whose headers do not arrive within
HSEPAY_HEADER_TIMEOUT.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import free_port, running
from tests.support import event_secrets_env

HEADER_TIMEOUT = 2.0
PATIENCE = HEADER_TIMEOUT + 30  # how long the probe itself waits: far past the server's own timeout


@pytest.fixture(scope="module")
def servers(db_urls, data_dir, broker):
    """name -> port of each way of serving: `up` (its payments API and gateway) and `serve payments`."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        **{k: v for k, v in os.environ.items() if k != "HSEPAY_AUTH_SECRET"},
        # A budget of one request per caller (health probes are not limited): the gateway test below.
        "HSEPAY_RATE_LIMIT": "1",
        "HSEPAY_RATE_BURST": "1",
        "HSEPAY_PAYMENTS_DB": db_urls["payments"],
        "HSEPAY_ORDERS_DB": db_urls["orders"],
        "HSEPAY_DATA_DIR": str(data_dir),
        "HSEPAY_KAFKA": broker,
        "HSEPAY_KAFKA_IDEMPOTENCE": os.environ.get("HSEPAY_TEST_KAFKA_IDEMPOTENCE", "false"),
        "HSEPAY_ORDERS_TOPIC": f"orders-{suffix}",
        "HSEPAY_PAYMENT_STATUS_TOPIC": f"payment-status-{suffix}",
        "HSEPAY_GROUP_PREFIX": f"stack-{suffix}",
        "HSEPAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        **event_secrets_env(),
    }
    up_payments, up_orders, up_gateway, served = free_port(), free_port(), free_port(), free_port()
    up = ["up", "--payments-port", str(up_payments), "--orders-port", str(up_orders)]
    up += ["--gateway-port", str(up_gateway), "--no-status"]
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            running(up, env, [f"http://127.0.0.1:{p}/health/live" for p in (up_payments, up_orders, up_gateway)])
        )
        stack.enter_context(
            running(
                ["serve", "payments", "--port", str(served), "--insecure-no-auth"],
                env,
                [f"http://127.0.0.1:{served}/health/live"],
            )
        )
        yield {"up payments": up_payments, "up orders": up_orders, "up gateway": up_gateway, "serve payments": served}


WAYS = ["up payments", "up gateway", "serve payments"]


def _exchange(port: int, data: bytes) -> bytes:
    """Send `data`, read until the server closes (or PATIENCE passes): everything it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as sock:
        sock.sendall(data)
        answer = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def _statuses(answer: bytes) -> list[int]:
    return [int(answer[i + 9 : i + 12]) for i in range(len(answer)) if answer.startswith(b"HTTP/1.1 ", i)]


@pytest.mark.parametrize("way", WAYS)
def test_content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled(servers, way):
    smuggled = b"GET /health/live?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (
        b"POST /api/accounts HTTP/1.1\r\n" if way.endswith("gateway") else b"POST /accounts HTTP/1.1\r\n"
    ) + b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = _exchange(servers[way], request + b"0\r\n\r\n" + smuggled)
    assert _statuses(answer) == [411], answer[:300]  # one answer, and the connection closed after it


@pytest.mark.parametrize("way", WAYS)
def test_a_body_must_say_its_length(servers, way):
    """A chunked body alone is refused too: granian turns Content-Length + Transfer-Encoding into one."""
    path = b"/api/accounts" if way.endswith("gateway") else b"/accounts"
    chunked = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    chunked += b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    answer = _exchange(servers[way], chunked)
    assert _statuses(answer) == [411] and b"Content-Length" in answer


@pytest.mark.parametrize("framing", [b"Content-Length: 4\r\nTransfer-Encoding: chunked", b"Transfer-Encoding: chunked"])
def test_the_orders_fast_lane_refuses_what_the_stack_refuses(servers, framing):
    """POST /orders is answered ahead of Litestar (hsepay.api.lane): a chunked body is still a 411."""
    request = b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n"
    answer = _exchange(servers["up orders"], request + b"2\r\n{}\r\n0\r\n\r\n")
    assert _statuses(answer) == [411], answer[:300]


@pytest.mark.parametrize("way", WAYS)
def test_two_content_lengths_are_refused(servers, way):
    request = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    assert _statuses(_exchange(servers[way], request)) == [400]


@pytest.mark.parametrize("way", WAYS)
def test_folded_header_lines_are_refused(servers, way):
    request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n"
    assert _statuses(_exchange(servers[way], request)) == [400]


@pytest.mark.parametrize("way", WAYS)
def test_an_http_0_9_request_line_gets_no_answer_but_a_400(servers, way):
    answer = _exchange(servers[way], b"GET /health/live\r\n\r\n")
    assert _statuses(answer) in ([400], []) and b"ok" not in answer.lower().split(b"\r\n\r\n")[-1]


@pytest.mark.parametrize("way", WAYS)
def test_headers_that_never_end_are_timed_out(servers, way):
    started = time.monotonic()
    answer = _exchange(servers[way], b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    waited = time.monotonic() - started
    assert _statuses(answer) in ([], [408]), answer[:200]
    assert HEADER_TIMEOUT * 0.5 <= waited < PATIENCE, f"closed after {waited:.1f}s"


@pytest.mark.parametrize("way", WAYS)
def test_a_well_formed_request_still_works_and_keeps_its_connection(servers, way):
    path = b"/health/live"
    answer = _exchange(
        servers[way],
        b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\nGET " + path + b" HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert _statuses(answer) == [200, 200]


def test_up_trusts_its_own_gateway_for_the_client_address(servers):
    """Two clients (two loopback addresses) behind `up`'s gateway: each has its own budget, because the
    gateway sends X-Forwarded-For and `up` tells its APIs to believe it from the gateway's address."""
    statuses = {}
    for client in ("127.0.0.2", "127.0.0.3"):
        transport = httpx.HTTPTransport(local_address=client)
        with httpx.Client(transport=transport, base_url=f"http://127.0.0.1:{servers['up gateway']}") as http:
            statuses[client] = [http.get("/api/orders").status_code for _ in range(2)]
    assert statuses == {"127.0.0.2": [200, 429], "127.0.0.3": [200, 429]}


def test_the_orders_fast_lane_trusts_the_gateway_as_the_handlers_do(servers):
    """GET /order/{id} is answered ahead of Litestar (hsepay.api.lane) with the same guard: two clients
    behind the gateway still have a budget each (the address from X-Forwarded-For)."""
    statuses = {}
    for client in ("127.0.0.4", "127.0.0.5"):
        transport = httpx.HTTPTransport(local_address=client)
        with httpx.Client(transport=transport, base_url=f"http://127.0.0.1:{servers['up gateway']}") as http:
            statuses[client] = [http.get(f"/api/order/{uuid.uuid4()}").status_code for _ in range(2)]
    assert statuses == {"127.0.0.4": [404, 429], "127.0.0.5": [404, 429]}
