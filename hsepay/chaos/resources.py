"""What a long run uses, sampled at a fixed interval: leaks show as slopes (issue 22, item 6).

Per role (its process and the processes it started, e.g. an API's granian worker): resident
memory and open file descriptors. Per service database: its connections (pg_stat_activity). Per
consumer group: its lag (messages on its topics not yet committed). A killed role's series goes
on with the process that replaced it.

`flatness()` fits a line to each series after a warm-up and reports how much it grows over the
run; `FLAT_LIMITS` says how much is still flat. A role restarted by a fault starts a new segment
of its series (a new process grows from scratch); the longest segment is the one judged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from sqlalchemy import text

from hsepay import registry
from hsepay.chaos.roles import RoleSet
from hsepay.relay.broker import consumer_lag
from hsepay.system import System

__all__ = ["FLAT_LIMITS", "ResourceSampler", "flatness", "slope"]

FLAT_LIMITS = {"rss_mb": 25.0, "fds": 10.0, "db_connections": 6.0, "consumer_lag": 200.0}
"""Growth over the run (fitted line, after the warm-up) still called flat, per kind of series."""
WARM_UP = 0.25
"""Fraction of the samples left out of the fit: caches, pools and JIT-less imports settle first."""
LAG_TIMEOUT = 5.0


@dataclass
class ResourceSampler:
    system: System
    roles: RoleSet
    every: float = 60.0
    started: float = field(default_factory=time.time)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """`kind:name` -> (seconds since `started`, value)."""
    segments: dict[str, list[int]] = field(default_factory=dict)
    """`kind:name` -> the process (pid) of each sample of a role's series."""
    journal: Path | None = None
    """Rewritten after every sample with the series so far, so a run that dies keeps its curves."""

    def _add(self, kind: str, name: str, at: float, value: float, pid: int = 0) -> None:
        self.series.setdefault(f"{kind}:{name}", []).append((round(at - self.started, 1), round(value, 2)))
        self.segments.setdefault(f"{kind}:{name}", []).append(pid)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.every)

    async def sample(self) -> None:
        at = time.time()
        for name, role in self.roles.roles.items():
            usage = _process_tree_usage(role.pid)
            if usage is not None:
                self._add("rss_mb", name, at, usage[0] / 2**20, role.pid or 0)
                self._add("fds", name, at, usage[1], role.pid or 0)
        for spec in registry.with_database():
            with contextlib.suppress(Exception):  # a database or broker down right now: no sample
                async with asyncio.timeout(LAG_TIMEOUT):
                    async with self.system.engine(spec.name).connect() as conn:
                        connections = (
                            await conn.execute(
                                text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                            )
                        ).scalar_one()
                self._add("db_connections", spec.name, at, connections)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(LAG_TIMEOUT):
                    lag = await consumer_lag(
                        self.system[spec.name].broker,
                        self.system.settings.kafka.group_of(spec.name),
                        spec.consumes(self.system.settings.kafka),
                    )
                self._add("consumer_lag", spec.name, at, sum(lag.values()))
        if self.journal is not None:
            with contextlib.suppress(OSError):  # a full disk must not end the run it measures
                partial = self.journal.with_suffix(".tmp")
                partial.write_text(json.dumps({"series": self.series, "segments": self.segments}))
                partial.replace(self.journal)


def _process_tree_usage(pid: int | None) -> tuple[int, int] | None:
    """(resident bytes, open file descriptors) of a process and its descendants."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    rss = fds = 0
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            rss += proc.memory_info().rss
            fds += proc.num_fds()
    return rss, fds


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (value per second); 0 for fewer than two distinct times."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def longest_segment(points: list[tuple[float, float]], pids: list[int] | None) -> list[tuple[float, float]]:
    """The samples of the process that lived longest (all of them for a series without processes)."""
    if not pids or len(pids) != len(points):
        return points
    runs: list[list[tuple[float, float]]] = []
    for index, point in enumerate(points):
        if index == 0 or pids[index] != pids[index - 1]:
            runs.append([])
        runs[-1].append(point)
    return max(runs, key=len)


def flatness(
    series: dict[str, list[tuple[float, float]]], segments: dict[str, list[int]] | None = None
) -> dict[str, dict[str, float | bool]]:
    """Per series: its growth over the run after the warm-up (the fitted line, on the longest-lived
    process of a role), per hour, and whether that growth is within FLAT_LIMITS for its kind."""
    report: dict[str, dict[str, float | bool]] = {}
    for name, points in series.items():
        judged = longest_segment(points, (segments or {}).get(name))
        kept = judged[int(len(judged) * WARM_UP) :]
        if len(kept) < 3:
            continue
        rate = slope(kept)
        span = kept[-1][0] - kept[0][0]
        growth = rate * span
        limit = FLAT_LIMITS[name.split(":", 1)[0]]
        report[name] = {
            "first": kept[0][1],
            "last": kept[-1][1],
            "max": max(v for _, v in points),
            "growth": round(growth, 2),
            "per_hour": round(rate * 3600, 2),
            "flat": growth <= limit,
        }
    return report
