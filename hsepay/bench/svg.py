"""Two kinds of chart as inline SVG, drawn by our own small code: no library, nothing fetched at view time.

- `histogram_svg`: latencies on a logarithmic axis, one bar per bin, p50 and p99 marked;
- `series_svg`: one or more lines of values over time, with optional vertical marks.
Colours and fonts are attributes, not only CSS, so a chart copied out of the page looks the same.
Hovering a bar or a point shows its numbers (SVG <title>).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from hsepay.bench.stats import Histogram

__all__ = ["histogram_svg", "series_svg"]

WIDTH, HEIGHT = 760, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 44
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
MAX_HOVER_POINTS = 150
"""Longer series get no hover targets: the file stays small."""


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:g}k" if value % 1000 == 0 else f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _nice_ticks(low: float, high: float, count: int = 5, *, cover: bool = False) -> list[float]:
    """Round values from `low` to `high` about `count` apart; with `cover`, the last one is >= `high`."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks, value = [], math.ceil(low / step) * step
    while value <= high + step * 1e-9 or (cover and ticks[-1] < high):
        ticks.append(round(value, 10))
        value += step
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 steps on a log axis; every integer mantissa when the range is too narrow for those."""
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [
            m * 10**exponent
            for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
            for m in mantissas
            if low <= m * 10**exponent <= high
        ]
        if len(ticks) >= 3:
            break
    return ticks


def _text(x: float, y: float, label: str, *, anchor: str = "start", css: str = "tick", extra: str = "") -> str:
    return (
        f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" font-size="11" fill="#374151" '
        f'text-anchor="{anchor}"{extra}>{escape(label)}</text>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, css: str, colour: str) -> str:
    return f'<line class="{css}" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"/>'


def _x_tick(x: float, value: float) -> list[str]:
    return [
        _line(x, HEIGHT - BOTTOM, x, HEIGHT - BOTTOM + 4, "axis", "#6b7280"),
        _text(x, HEIGHT - BOTTOM + 16, _fmt(value), anchor="middle"),
    ]


def _y_tick(y: float, value: float) -> list[str]:
    return [_line(LEFT, y, WIDTH - RIGHT, y, "grid", "#e5e7eb"), _text(LEFT - 6, y + 4, _fmt(value), anchor="end")]


def _mark(x: float, label: str, row: int) -> list[str]:
    """A dashed vertical line and its label, kept inside the picture (right-aligned near the edge)."""
    anchor, at = ("end", x - 3) if x > WIDTH - RIGHT - 140 else ("start", x + 3)
    return [
        f'<line class="mark" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" '
        'stroke="#dc2626" stroke-dasharray="4 3"/>',
        _text(at, TOP + 10 + 13 * row, label, anchor=anchor, css="marklabel", extra=' style="fill:#b91c1c"'),
    ]


def _frame(title: str, body: list[str], x_label: str, y_label: str, legend: Sequence[tuple[str, str]] = ()) -> str:
    """The chart's box, title, axes and labels around `body`; a legend (name, colour) goes under the plot."""
    middle_y = (TOP + HEIGHT - BOTTOM) / 2
    rows: list[list[tuple[str, str]]] = [[]]
    used = 0
    for name, colour in legend:
        width = 24 + 6.5 * len(name)
        if rows[-1] and used + width > PLOT_W:
            rows.append([])
            used = 0
        rows[-1].append((name, colour))
        used += width
    height = HEIGHT + 18 * len(rows) * bool(legend)
    for index, row in enumerate(rows if legend else []):
        x, y = LEFT, HEIGHT + 12 + 18 * index
        for name, colour in row:
            body = [*body, f'<rect x="{x:.1f}" y="{y - 9}" width="10" height="10" fill="{colour}"/>']
            body.append(_text(x + 14, y, name, css="legend"))
            x += 24 + 6.5 * len(name)
    return "\n".join(
        [
            f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
            f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}" font-family="sans-serif">',
            f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
            f'<text class="title" x="{LEFT}" y="18" font-size="13" font-weight="600" fill="#111827">'
            f"{escape(title)}</text>",
            *body,
            _line(LEFT, HEIGHT - BOTTOM, WIDTH - RIGHT, HEIGHT - BOTTOM, "axis", "#6b7280"),
            _line(LEFT, TOP, LEFT, HEIGHT - BOTTOM, "axis", "#6b7280"),
            _text((LEFT + WIDTH - RIGHT) / 2, HEIGHT - 6, x_label, anchor="middle", css="label"),
            _text(14, middle_y, y_label, anchor="middle", css="label", extra=f' transform="rotate(-90 14 {middle_y})"'),
            "</svg>",
        ]
    )


def histogram_svg(histogram: Histogram, title: str, bins: int = 40) -> str:
    """Bars of a latency histogram (milliseconds, log scale), with p50 and p99 as dashed lines."""
    data = histogram.bins(bins)
    if not data:
        return _frame(title, [_text(LEFT + 20, HEIGHT / 2, "no samples", css="label")], "milliseconds", "count")
    low, high = data[0][0] * 1000, data[-1][1] * 1000
    if high <= low * 1.0001:
        low, high = low / 1.1, high * 1.1
    span = math.log(high / low)
    top = max(n for _, _, n in data)

    def x_of(ms: float) -> float:
        return LEFT + PLOT_W * math.log(min(max(ms, low), high) / low) / span

    body = []
    y_ticks = _nice_ticks(0, top, 4, cover=True)
    top = y_ticks[-1]
    for value in y_ticks:
        body += _y_tick(TOP + PLOT_H - PLOT_H * value / top, value)
    for lo, hi, n in data:
        if n:
            x1, x2, h = x_of(lo * 1000), x_of(hi * 1000), PLOT_H * n / top
            body.append(
                f'<rect class="bar" x="{x1:.1f}" y="{TOP + PLOT_H - h:.1f}" width="{max(x2 - x1 - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="#2563eb"><title>{lo * 1000:.2f}–{hi * 1000:.2f} ms: {n:,}</title></rect>'
            )
    for value in _log_ticks(low, high):
        body += _x_tick(x_of(value), value)
    for row, (name, q) in enumerate((("p50", 0.5), ("p99", 0.99))):
        value = histogram.percentile(q)
        if value is not None:
            body += _mark(x_of(value * 1000), f"{name} {value * 1000:.1f} ms", row)
    return _frame(title, body, "milliseconds (log scale)", "count")


def series_svg(
    series: Mapping[str, Sequence[Sequence[float]]],
    title: str,
    *,
    y_label: str = "per second",
    marks: Sequence[tuple[float, str]] = (),
) -> str:
    """Lines of (x seconds, y) points, one per named series, with a legend and vertical marks."""
    points = [p for values in series.values() for p in values]
    if not points:
        return _frame(title, [_text(LEFT + 20, HEIGHT / 2, "no data", css="label")], "seconds", y_label)
    x_high = max([p[0] for p in points] + [m[0] for m in marks]) or 1.0
    y_ticks = _nice_ticks(0, max(p[1] for p in points) or 1.0, 4, cover=True)
    y_top = y_ticks[-1] or 1.0

    def x_of(x: float) -> float:
        return LEFT + PLOT_W * x / x_high

    def y_of(y: float) -> float:
        return TOP + PLOT_H - PLOT_H * y / y_top

    body = []
    for value in y_ticks:
        body += _y_tick(y_of(value), value)
    for value in _nice_ticks(0, x_high, 8):
        body += _x_tick(x_of(value), value)
    for row, (x, label) in enumerate(marks):
        body += _mark(x_of(x), label, row % 2)
    for index, (name, values) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in values)
        body.append(f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="1.6" points="{path}"/>')
        if len(values) <= MAX_HOVER_POINTS:
            for x, y in values:
                body.append(
                    f'<circle class="point" cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="2" fill="{colour}">'
                    f"<title>{escape(name)}: {_fmt(y)} at {x:g} s</title></circle>"
                )
    legend = [(name, COLOURS[index % len(COLOURS)]) for index, name in enumerate(series)]
    return _frame(title, body, "seconds", y_label, legend)
