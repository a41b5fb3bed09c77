"""A soak: a steady load for a long time with a fault every few minutes (issue 22, item 6), and the
curves of what every process used meanwhile (hsepay.chaos.resources).

`periodic_plan` spaces the faults evenly; `write_curves` draws one chart per kind of series (memory,
descriptors, database connections, consumer lag) with the faults marked, as SVG files next to the
run's JSON report.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from hsepay.chaos.faults import NET_DOWN, NET_KINDS, Fault
from hsepay.chaos.report import ChaosReport

__all__ = ["periodic_plan", "write_curves"]

Draw = Callable[..., str]
"""Draws named series as an SVG chart: (series, title, *, y_label, marks) -> the SVG text."""

CHARTS = {
    "rss_mb": ("Resident memory per role", "MB"),
    "fds": ("Open file descriptors per role", "descriptors"),
    "db_connections": ("Connections per service database (pg_stat_activity)", "connections"),
    "consumer_lag": ("Consumer lag per service (messages not committed)", "messages"),
}


def periodic_plan(
    seed: int,
    duration: float,
    every: float,
    *,
    roles: Sequence[str],
    kinds: Sequence[str],
    links: Sequence[str] = ("pg-orders", "pg-payments", "broker"),
) -> list[Fault]:
    """One fault every `every` seconds of a `duration`-second load (the first after `every`), of
    kinds drawn in turn from a seeded shuffle, each on a role or link drawn from the seed."""
    rng = random.Random(seed)
    order = list(kinds)
    plan: list[Fault] = []
    at = every
    while at <= duration - every / 2:
        if len(plan) % len(order) == 0:
            rng.shuffle(order)
        kind = order[len(plan) % len(order)]
        if kind == "kill-role":
            plan.append(Fault(at, kind, rng.choice(list(roles)), down=round(rng.uniform(0.5, 3.0), 2)))
        elif kind in NET_KINDS:
            plan.append(Fault(at, kind, rng.choice(list(links)), down=min(NET_DOWN[kind], every / 3)))
        elif kind == "pg-restart":
            plan.append(Fault(at, kind, down=round(rng.uniform(1.0, 4.0), 2)))
        else:
            plan.append(Fault(at, kind))
        at += every
    return plan


def write_curves(report: ChaosReport, directory: Path, draw: Draw, prefix: str = "soak") -> list[Path]:
    """`<prefix>-<kind>.svg` per kind of series, drawn by `draw` (hsepay.bench.svg.series_svg: the
    bench sits above chaos, so the command hands it in), and `<prefix>.json` (the whole report)."""
    directory.mkdir(parents=True, exist_ok=True)
    begin = report.load.started
    marks = [(round(f.started - begin, 1), f.fault.label()) for f in report.faults]
    written = []
    for kind, (title, unit) in CHARTS.items():
        series = {
            name.split(":", 1)[1]: points for name, points in report.resources.items() if name.startswith(f"{kind}:")
        }
        if not series:
            continue
        path = directory / f"{prefix}-{kind.replace('_', '-')}.svg"
        path.write_text(draw(series, title, y_label=unit, marks=marks))
        written.append(path)
    path = directory / f"{prefix}.json"
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
    written.append(path)
    return written
