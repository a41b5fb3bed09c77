"""What every scenario's result shares: its `Context` (machine, load average before and after, engines,
layout), its `Verdict` (the audit after the run: a figure without both is not worth keeping), and
its `Chart`s.

Each scenario's result is a dataclass in the scenario's module with `to_json()`, `table_rows()` (its
Rich table), `charts()` (the HTML report's pictures) and `processes()` (CPU and memory per process).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsepay.bench.stats import Histogram
from hsepay.bench.usage import Phase

__all__ = ["Chart", "Context", "Verdict", "per_unit_ms", "process_header", "process_rows"]


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass
class Context:
    scenario: str
    layout: str
    engines: dict[str, str] = field(default_factory=dict)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 0)
    load_before: tuple[float, ...] = field(default_factory=lambda: tuple(round(x, 2) for x in os.getloadavg()))
    load_after: tuple[float, ...] = ()
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    python: str = field(default_factory=platform.python_version)
    commit: str | None = field(default_factory=_commit)
    settings: dict[str, str] = field(default_factory=dict)
    """The HSEPAY_* tuning the caller passed through to the roles (databases and secrets left out)."""

    def finish(self) -> None:
        self.load_after = tuple(round(x, 2) for x in os.getloadavg())

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        return (
            f"{self.cpus} CPUs, load {'/'.join(map(str, self.load_before))} before, "
            f"{'/'.join(map(str, self.load_after))} after; {self.layout}"
        )


@dataclass
class Verdict:
    """The audit after a run: the money invariants (or the relay's delivery check) plus the bench's
    own sanity checks (every order final, every 202 an order, no role died)."""

    ok: bool
    problems: list[str] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Worth knowing, not a failure (e.g. the client used most of a core)."""

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, "notes": self.notes, "audit": self.audit}


@dataclass
class Chart:
    """One picture of the HTML report: a latency histogram, or rates over time."""

    kind: str  # "histogram" | "series"
    title: str
    histogram: Histogram | None = None
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    y_label: str = "per second"
    marks: list[tuple[float, str]] = field(default_factory=list)
    """Vertical lines on a series chart: (x, label)."""


def per_unit_ms(phase: Phase, units: int) -> dict[str, float]:
    return {p.name: round(p.cpu_s * 1000 / units, 3) for p in phase.processes} if units else {}


def process_header(unit: str) -> list[str]:
    return ["process", "CPU s", f"CPU ms per {unit}", f"waited for a CPU, ms per {unit}", "peak RSS MB"]


def process_rows(phase: Phase, units: int, unit: str) -> list[tuple[str, str, str, str, str]]:
    """Rows of `process_header(unit)`: each process's CPU, its run delay and its peak RSS."""
    rows = []
    for p in phase.processes:
        per = f"{p.cpu_s * 1000 / units:.3f}" if units else "-"
        waited = f"{p.waited_s * 1000 / units:.3f}" if units and p.waited_s is not None else "-"
        rows.append((p.name, f"{p.cpu_s:.2f}", per, waited, "-" if p.max_rss_mb is None else f"{p.max_rss_mb:.0f}"))
    return rows
