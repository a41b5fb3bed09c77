"""Closed-loop HTTP load from several processes, each with its share of the connections.

Each connection sends its next request as soon as the previous answer arrives (a closed loop, as
wrk does): the rate measured is what the server sustains at that many connections. The client
runs in several processes so that one Python process's single core is not the ceiling, and every
process reports the CPU it used, so a reader can tell whether the client was the bottleneck.

Parent side: `generate_load` starts `python -m hsepay.bench.loadgen` once per process, hands each
its spec as one JSON line on stdin, waits until every one has its connections open, says `go` to
all, and merges their results. Child side (`main`): standard library only, so it starts fast.
(Over 300 lines: both sides of one small protocol, kept in one file so they cannot drift apart.)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hsepay.bench.httpclient import Connection, Endpoint, connect, encode_request
from hsepay.bench.stats import Histogram, rate_series

__all__ = ["Call", "LoadResult", "generate_load"]

TICK = 0.1
"""Completions are counted per TICK seconds of wall-clock time, for the throughput picture."""
OPEN_LOOP_TICK = 0.005
"""An open-loop client sends what is due every OPEN_LOOP_TICK seconds (asyncio sleeps ~1 ms at best)."""


class Call(NamedTuple):
    """One request of a load: method, path (None: the URL's), JSON body (None: none), extra headers."""

    method: str
    path: str | None
    body: str | None
    headers: Mapping[str, str]


# --- child ---------------------------------------------------------------------------------------


class ClosedLoop:
    """The connections of one process and what they saw."""

    def __init__(self, endpoint: Endpoint, requests: Sequence[bytes], *, timeout: float) -> None:
        self.endpoint = endpoint
        self.requests = requests
        self.next = random.randrange(len(requests))
        self.timeout = timeout
        self.conns: set[Connection] = set()
        self.measuring = False
        self.stopping = False
        self.histogram = Histogram()
        self.statuses: Counter[int] = Counter()
        """Answers that arrived inside the measured window."""
        self.statuses_total: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.errors_total: Counter[str] = Counter()
        self.ticks: Counter[int] = Counter()
        self.reconnects = 0
        self.opened = 0
        self.skipped = 0
        """Open loop only: requests that were due while every connection was busy (not sent)."""
        self._tasks: set[asyncio.Task] = set()

    def fire(self, conn: Connection) -> None:
        if self.stopping or not conn.open:
            return
        request = self.requests[self.next % len(self.requests)]
        self.next += 1
        conn.send(request)

    def answered(self, conn: Connection, status: int, body: bytes, keep_alive: bool) -> None:
        self.statuses_total[status] += 1
        self.ticks[int(time.time() / TICK)] += 1
        if self.measuring:
            self.histogram.record(time.perf_counter() - conn.sent_at)
            self.statuses[status] += 1
        if keep_alive:
            self.fire(conn)

    def lost(self, conn: Connection, exc: BaseException | None) -> None:
        self.conns.discard(conn)
        if conn.busy or exc is not None:  # a request died with it, or the connection broke
            self._error(type(exc).__name__ if exc is not None else "ClosedByServer")
        if not self.stopping:
            task = asyncio.get_running_loop().create_task(self._reopen())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _error(self, name: str) -> None:
        self.errors_total[name] += 1
        if self.measuring:
            self.errors[name] += 1

    async def open(self, count: int) -> None:
        for _ in range(count):
            self.conns.add(await connect(self.endpoint, self))
            self.opened += 1

    async def _reopen(self) -> None:
        while not self.stopping:
            try:
                conn = await connect(self.endpoint, self)
            except OSError as exc:
                self._error(type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            self.reconnects += 1
            self.conns.add(conn)
            self.fire(conn)
            return

    async def _watch_timeouts(self) -> None:
        while not self.stopping:
            await asyncio.sleep(0.25)
            now = time.perf_counter()
            for conn in list(self.conns):
                if conn.busy and now - conn.sent_at > self.timeout:
                    conn.abort(TimeoutError())

    def start(self) -> None:
        for conn in list(self.conns):
            self.fire(conn)

    async def run(self, warmup: float, duration: float) -> dict[str, Any]:
        watchdog = asyncio.create_task(self._watch_timeouts())
        cpu_load_began = time.process_time()
        self.start()
        await asyncio.sleep(warmup)
        self.measuring = True
        began, cpu_began = time.perf_counter(), time.process_time()
        await asyncio.sleep(duration)
        self.measuring = False
        window, cpu_window = time.perf_counter() - began, time.process_time() - cpu_began
        self.stopping = True
        deadline = time.monotonic() + self.timeout
        while any(conn.busy for conn in self.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        unfinished = sum(1 for conn in self.conns if conn.busy)
        for conn in list(self.conns):
            conn.transport.close()
        watchdog.cancel()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "connections": self.opened,
            "window_s": window,
            "cpu_window_s": cpu_window,
            "cpu_load_s": time.process_time() - cpu_load_began,
            "cpu_total_s": usage.ru_utime + usage.ru_stime,
            "max_rss_kb": _peak_rss_kb(usage),
            "histogram": self.histogram.to_json(),
            "statuses": dict(self.statuses),
            "statuses_total": dict(self.statuses_total),
            "errors": dict(self.errors),
            "errors_total": dict(self.errors_total),
            "ticks": dict(self.ticks),
            "reconnects": self.reconnects,
            "unfinished": unfinished,
            "skipped": self.skipped,
        }


class OpenLoop(ClosedLoop):
    """Requests at a fixed rate whatever the answers (a stall shows up as skipped requests and
    latency instead of a lower rate), each on a connection that is free at the time."""

    def __init__(self, endpoint: Endpoint, requests: Sequence[bytes], *, timeout: float, rate: float) -> None:
        super().__init__(endpoint, requests, timeout=timeout)
        self.rate = rate
        self.idle: list[Connection] = []
        self._ticker: asyncio.Task | None = None

    def start(self) -> None:
        self.idle = [conn for conn in self.conns if conn.open]
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    def answered(self, conn: Connection, status: int, body: bytes, keep_alive: bool) -> None:
        super().answered(conn, status, body, False)
        if keep_alive and conn.open and not self.stopping:
            self.idle.append(conn)

    def lost(self, conn: Connection, exc: BaseException | None) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        super().lost(conn, exc)

    def fire(self, conn: Connection) -> None:  # a reopened connection waits for its turn
        if conn.open and not self.stopping:
            self.idle.append(conn)

    async def _tick(self) -> None:
        began, sent = time.perf_counter(), 0
        while not self.stopping:
            due = int((time.perf_counter() - began) * self.rate) - sent
            for _ in range(due):
                sent += 1
                if not self.idle:
                    self.skipped += 1
                    continue
                conn = self.idle.pop()
                conn.send(self.requests[self.next % len(self.requests)])
                self.next += 1
            await asyncio.sleep(OPEN_LOOP_TICK)


def _peak_rss_kb(usage: resource.struct_rusage) -> int:
    """This process's peak resident memory. /proc's VmHWM where there is one: Linux keeps ru_maxrss
    across exec, so it would report the forking parent's size, not this client's."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return usage.ru_maxrss


def _say(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _child(spec: Mapping[str, Any]) -> None:
    endpoint = Endpoint(spec["url"])
    requests = [
        encode_request(endpoint, method, path, None if body is None else body.encode(), headers)
        for method, path, body, headers in spec["requests"]
    ]
    if spec.get("rate"):
        loop: ClosedLoop = OpenLoop(endpoint, requests, timeout=spec["timeout"], rate=spec["rate"])
    else:
        loop = ClosedLoop(endpoint, requests, timeout=spec["timeout"])
    try:
        await loop.open(spec["connections"])
    except OSError as exc:
        _say({"error": f"cannot connect to {spec['url']}: {exc}"})
        return
    _say({"ready": len(loop.conns)})
    if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
        return
    _say(await loop.run(spec["warmup"], spec["duration"]))


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    asyncio.run(_child(spec))


# --- parent --------------------------------------------------------------------------------------


@dataclass
class ClientProcess:
    pid: int
    connections: int
    cpu_window_s: float
    """CPU seconds over the measured window."""
    cpu_load_s: float
    """CPU seconds from `go` until the last answer (warm-up included), as the servers' are counted."""
    cpu_total_s: float
    """CPU seconds of the whole process (start-up and connecting included)."""
    max_rss_mb: float

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "connections": self.connections,
            "cpu_window_s": round(self.cpu_window_s, 3),
            "cpu_load_s": round(self.cpu_load_s, 3),
            "cpu_total_s": round(self.cpu_total_s, 3),
            "max_rss_mb": round(self.max_rss_mb, 1),
        }


@dataclass
class LoadResult:
    """The merged figures of every client process over the measured window."""

    connections: int
    window_s: float
    histogram: Histogram
    statuses: Counter[int]
    statuses_total: Counter[int]
    errors: Counter[str]
    errors_total: Counter[str]
    clients: list[ClientProcess]
    ticks: Counter[int] = field(default_factory=Counter)
    started_at: float = 0.0
    """Wall-clock time of `go` (warm-up start)."""
    warmup_s: float = 0.0
    reconnects: int = 0
    unfinished: int = 0
    skipped: int = 0
    """Open loop: requests due while every connection of their process was busy."""

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.requests / self.window_s if self.window_s else 0.0

    @property
    def client_cpu_s(self) -> float:
        return sum(client.cpu_window_s for client in self.clients)

    def series(self, step: float = 0.25, window: float = 1.0) -> list[tuple[float, float]]:
        """(seconds since go, answers per second over the last `window` seconds), warm-up included."""
        if not self.ticks:
            return []
        times = [tick * TICK + TICK / 2 for tick, count in self.ticks.items() for _ in range(count)]
        return rate_series(times, self.started_at, max(times), step, window)


async def generate_load(
    url: str,
    requests: Sequence[Call],
    *,
    connections: int,
    processes: int,
    warmup: float,
    duration: float,
    timeout: float = 10.0,
    rate: float | None = None,
) -> LoadResult:
    """Send each of `requests` in turn to `url`'s server, over `connections` keep-alive connections
    spread over `processes` client processes; measure `duration` seconds after `warmup`.

    A closed loop (each connection sends its next request when its answer arrives) unless `rate`
    is given: then `rate` requests per second in all, on a fixed schedule (an open loop)."""
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    children = []
    try:
        for share in shares:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hsepay.bench.loadgen",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            children.append(child)
            spec = {
                "url": url,
                "connections": share,
                "requests": [[call.method, call.path, call.body, dict(call.headers)] for call in requests],
                "rate": rate / len(shares) if rate else None,
                "warmup": warmup,
                "duration": duration,
                "timeout": timeout,
            }
            child.stdin.write(json.dumps(spec).encode() + b"\n")
            await child.stdin.drain()
        for child in children:
            answer = await _read(child, timeout=60)
            if "ready" not in answer:
                raise RuntimeError(answer.get("error", f"load client said {answer!r}"))
        started_at = time.time()
        for child in children:
            child.stdin.write(b"go\n")
            await child.stdin.drain()
        results = [await _read(child, timeout=warmup + duration + timeout + 60) for child in children]
        for child in children:
            await child.wait()
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    return _merge(results, connections, started_at, warmup)


async def _read(child: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    line = await asyncio.wait_for(child.stdout.readline(), timeout)
    if not line:
        raise RuntimeError(f"load client pid {child.pid} exited with {await child.wait()} and said nothing")
    return json.loads(line)


def _merge(results: Sequence[Mapping[str, Any]], connections: int, started_at: float, warmup: float) -> LoadResult:
    merged = LoadResult(
        connections=connections,
        window_s=max(r["window_s"] for r in results),
        histogram=Histogram(),
        statuses=Counter(),
        statuses_total=Counter(),
        errors=Counter(),
        errors_total=Counter(),
        clients=[],
        started_at=started_at,
        warmup_s=warmup,
    )
    for r in results:
        merged.histogram.merge(Histogram.from_json(r["histogram"]))
        merged.statuses.update({int(k): v for k, v in r["statuses"].items()})
        merged.statuses_total.update({int(k): v for k, v in r["statuses_total"].items()})
        merged.errors.update(r["errors"])
        merged.errors_total.update(r["errors_total"])
        merged.ticks.update({int(k): v for k, v in r["ticks"].items()})
        merged.reconnects += r["reconnects"]
        merged.unfinished += r["unfinished"]
        merged.skipped += r.get("skipped", 0)
        merged.clients.append(
            ClientProcess(
                r["pid"], r["connections"], r["cpu_window_s"], r["cpu_load_s"], r["cpu_total_s"], r["max_rss_kb"] / 1024
            )
        )
    return merged


if __name__ == "__main__":
    main()
