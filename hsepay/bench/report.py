"""The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched) per run.

For each scenario: the verdict, the machine and its load, the figures, the pictures (latency
histogram, rates over time), CPU and peak memory of every process, and the raw JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from hsepay.bench.results import process_header, process_rows
from hsepay.bench.svg import histogram_svg, series_svg

__all__ = ["render", "write_report"]

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 860px; color: #111827; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 36px; border-bottom: 1px solid #e5e7eb; }
table { border-collapse: collapse; margin: 8px 0 16px; } td, th { padding: 3px 10px; text-align: left; }
tr:nth-child(even) td { background: #f9fafb; } th { border-bottom: 1px solid #d1d5db; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #15803d; font-weight: 600; } .failed { color: #b91c1c; font-weight: 600; }
.context { color: #4b5563; } pre { background: #f3f4f6; padding: 8px; overflow: auto; font-size: 12px; }
svg.chart { display: block; margin: 8px 0 20px; background: #fff; }
svg .title { font-size: 13px; font-weight: 600; fill: #111827; }
svg .axis { stroke: #6b7280; } svg .grid { stroke: #e5e7eb; }
svg .tick, svg .label, svg .legend { font-size: 11px; fill: #374151; }
svg .bar { fill: #2563eb; } svg .bar:hover { fill: #1e40af; }
svg .line { stroke-width: 1.6; } svg .mark { stroke: #dc2626; stroke-dasharray: 4 3; }
svg .marklabel { font-size: 11px; fill: #b91c1c; }
"""


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _section(result: Any) -> str:
    data = result.to_json()
    verdict = result.verdict
    status = '<span class="ok">audit ok</span>' if verdict.ok else '<span class="failed">FAILED</span>'
    parts = [f'<section class="scenario" id="{escape(data["scenario"])}">']
    parts.append(f"<h2>{escape(data['scenario'])} — {status}</h2>")
    parts.append(f'<p class="context">{escape(result.context.line())}</p>')
    engines = result.context.engines
    if engines:
        parts.append(_table([(k, v) for k, v in engines.items()]))
    for problem in verdict.problems:
        parts.append(f'<p class="failed">{escape(problem)}</p>')
    for note in verdict.notes:
        parts.append(f"<p>{escape(note)}</p>")
    parts.append(_table(result.table_rows(), ["figure", "value"]))
    for chart in result.charts():
        if chart.kind == "histogram" and chart.histogram is not None:
            parts.append(histogram_svg(chart.histogram, chart.title))
        else:
            parts.append(series_svg(chart.series, chart.title, y_label=chart.y_label, marks=chart.marks))
    phase, units, unit = result.processes()
    if phase is not None and phase.processes:
        parts.append(_table(process_rows(phase, units, unit), process_header(unit)))
    if result.context.settings:
        parts.append(_table(sorted(result.context.settings.items()), ["setting passed to the roles", "value"]))
    parts.append(f"<details><summary>JSON</summary><pre>{escape(json.dumps(data, indent=1))}</pre></details>")
    parts.append("</section>")
    return "\n".join(parts)


def render(results: Sequence[Any], title: str = "hsepay bench") -> str:
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    ok = all(r.verdict.ok for r in results)
    head = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>"
    )
    summary = ", ".join(f"{r.to_json()['scenario']}: {'ok' if r.verdict.ok else 'FAILED'}" for r in results)
    intro = (
        f"<h1>{escape(title)}</h1><p>{escape(stamp)} — {escape(summary)} — "
        f'<span class="{"ok" if ok else "failed"}">{"every audit ok" if ok else "an audit FAILED"}</span></p>'
        '<p class="context">Timings taken on a shared machine vary with its load (shown per scenario); '
        "CPU per order is exact whatever the load.</p>"
    )
    return head + intro + "\n".join(_section(r) for r in results) + "</body></html>\n"


def write_report(path: Path, results: Sequence[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results), encoding="utf-8")
    return path
