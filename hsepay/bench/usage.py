"""CPU seconds and peak memory of the processes of a run, per measured phase.

CPU comes from the kernel's accounting (user + system time), so it is exact however loaded the
box is; CPU per order is the figure to trust on a shared machine, where wall-clock rates are
noisy. Peak memory is the kernel's high-water mark of resident memory (VmHWM), not a sample.

How long each process's threads were runnable but waited for a CPU (the scheduler's run delay,
/proc/PID/task/TID/schedstat, Linux) says where wall-clock time went that CPU time does not: on a
box with more runnable processes than cores, a hop of the saga waits its turn.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["Phase", "ProcessFigures", "Tracked", "measure"]


@dataclass(frozen=True)
class Tracked:
    name: str
    pid: int
    with_children: bool = False
    """Count the process's children too (PostgreSQL's backends, `hsepay serve`'s granian workers)."""
    own_memory: bool = True
    """Its peak RSS means something (PostgreSQL's backends all count the shared buffers: no)."""
    since_start: bool = False
    """Count everything since the process started (one started inside the phase: its start-up counts)."""


@dataclass
class ProcessFigures:
    name: str
    pid: int
    cpu_s: float
    max_rss_mb: float | None
    """Peak resident memory over the process's life (None where it cannot be read, or is shared)."""
    waited_s: float | None = None
    """Seconds its threads were runnable but waited for a CPU (None where the kernel does not say)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "cpu_s": round(self.cpu_s, 3),
            "max_rss_mb": None if self.max_rss_mb is None else round(self.max_rss_mb, 1),
            "waited_for_cpu_s": None if self.waited_s is None else round(self.waited_s, 3),
        }


def _tree(tracked: Tracked) -> list[psutil.Process]:
    proc = psutil.Process(tracked.pid)
    return [proc, *proc.children(recursive=True)] if tracked.with_children else [proc]


def _cpu(tracked: Tracked) -> float | None:
    try:
        total = 0.0
        for p in _tree(tracked):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = p.cpu_times()
                total += times.user + times.system
        return total
    except psutil.Error:
        return None


def _waited(tracked: Tracked) -> float | None:
    """Run delay of every thread of the process (and its children), seconds; None where the kernel
    does not keep it (not Linux, or no scheduler statistics)."""
    if not os.path.exists("/proc/self/schedstat"):
        return None
    try:
        total = 0
        for p in _tree(tracked):
            with contextlib.suppress(OSError, ValueError, IndexError):
                for task in os.scandir(f"/proc/{p.pid}/task"):
                    with open(f"{task.path}/schedstat") as stat:
                        total += int(stat.read().split()[1])
        return total / 1e9
    except psutil.Error:
        return None


def _peak_rss_of(tracked: Tracked) -> float | None:
    """The largest peak RSS of the process and (with children) of each process under it."""
    if not tracked.own_memory:
        return None
    try:
        peaks = [_peak_rss_mb(p.pid) for p in _tree(tracked)]
    except psutil.Error:
        return None
    return max((peak for peak in peaks if peak is not None), default=None)


def _peak_rss_mb(pid: int) -> float | None:
    """VmHWM from /proc (Linux); elsewhere the current RSS."""
    with contextlib.suppress(OSError, ValueError):
        for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115 - tiny read
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).memory_info().rss / 2**20
    return None


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Phase:
    """What each tracked process spent between the start and the end of a `measure` block."""

    processes: list[ProcessFigures] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.processes]

    def cpu_of(self, prefix: str) -> float:
        return sum(p.cpu_s for p in self.processes if p.name.startswith(prefix))


@contextlib.contextmanager
def measure(tracked: Iterable[Tracked], *, include_self: str | None = "bench (this process)") -> Iterator[Phase]:
    """CPU used inside the block by each tracked process (and this one), and each one's peak RSS."""
    import time

    tracked = list(tracked)
    before = {t: 0.0 if t.since_start else _cpu(t) for t in tracked}
    waited_before = {t: 0.0 if t.since_start else _waited(t) for t in tracked}
    self_before = _self_cpu()
    began = time.monotonic()
    phase = Phase()
    try:
        yield phase
    finally:
        phase.seconds = time.monotonic() - began
        for t in tracked:
            start, end = before[t], _cpu(t)
            if start is None or end is None:
                continue
            waited_start, waited_end = waited_before[t], _waited(t)
            waited = None if waited_start is None or waited_end is None else max(0.0, waited_end - waited_start)
            phase.processes.append(ProcessFigures(t.name, t.pid, end - start, _peak_rss_of(t), waited))
        if include_self:
            phase.processes.append(
                ProcessFigures(include_self, os.getpid(), _self_cpu() - self_before, _peak_rss_mb(os.getpid()))
            )
