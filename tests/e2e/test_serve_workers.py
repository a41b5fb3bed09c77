"""`hsepay serve --workers N`: several API processes behind one port, sharing one /metrics, and
keep-alive connections that outlive a client's idea of "idle" (the connection resets of issue 14)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid

import httpx

from tests.e2e.conftest import free_port, running

IDLE = 6.0
"""Longer than the 5 s after which uvicorn used to close an idle connection (and httpx's pool expiry)."""


def _get(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: keep-alive\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            return answer  # the server closed the connection
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_an_idle_keep_alive_connection_stays_open_longer_than_clients_keep_theirs(hsepay_env):
    port = free_port()
    with running(
        ["serve", "orders", "--port", str(port), "--insecure-no-auth", "--workers", "2"],
        hsepay_env,
        [f"http://127.0.0.1:{port}/health/live"],
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert _get(sock, "/health/live").startswith(b"HTTP/1.1 200")
            time.sleep(IDLE)  # the scenario itself: a connection idle as long as a pooled client's
            assert _get(sock, "/health/live").startswith(b"HTTP/1.1 200"), "the server closed an idle connection"


def test_worker_processes_share_the_port_and_one_metrics(hsepay_env):
    port = free_port()
    with running(
        ["serve", "orders", "--port", str(port), "--insecure-no-auth", "--workers", "2"],
        {**hsepay_env, "HSEPAY_RATE_LIMIT": "0"},
        [f"http://127.0.0.1:{port}/health/ready"],
    ) as proc:

        async def place(count: int) -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=16)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30) as client:
                return await asyncio.gather(
                    *(client.post("/orders", json={"user_id": str(uuid.uuid4()), "amount": 1}) for _ in range(count))
                )

        answers = asyncio.run(place(60))
        assert [r.status_code for r in answers] == [202] * 60
        assert len({r.json()["id"] for r in answers}) == 60
        workers = {child.split()[0] for child in _children(proc.pid)}
        assert len(workers) >= 2, workers
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        served = sum(
            float(m[1])
            for m in re.finditer(
                r'hsepay_http_requests_total\{[^}]*route="/orders"[^}]*status="202"[^}]*\} (\S+)', metrics
            )
        )
        assert served == 60, "one scrape counts what every worker answered"


def _children(pid: int) -> list[str]:
    import psutil

    return [f"{child.pid} {child.name()}" for child in psutil.Process(pid).children()]


def test_a_kill_9_of_hsepay_serve_takes_its_workers_with_it(hsepay_env):
    """An orphaned worker would keep the port and answer, supervised by no one (CI found one left
    behind for every kill of an API role); the workers ask Linux to end them with their parent."""
    import psutil

    port = free_port()
    with running(
        ["serve", "orders", "--port", str(port), "--insecure-no-auth", "--workers", "2"],
        hsepay_env,
        [f"http://127.0.0.1:{port}/health/live"],
    ) as proc:
        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2, workers
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived hsepay serve: {alive}"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the port"
