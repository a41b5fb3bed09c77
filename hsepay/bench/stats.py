"""Latency histograms and event-rate series: small, mergeable, standard library only.

The load-generating processes import this module, so it must stay free of hsepay's heavy imports.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Histogram", "progress_series", "rate_series", "series_step"]

_GROWTH = 1.01
_LOG_GROWTH = math.log(_GROWTH)
_FLOOR = 1e-6
"""Smallest latency told apart (1 µs); below it everything lands in bucket 0."""


class Histogram:
    """Latencies in logarithmic buckets 1% wide: any percentile is within 1% of the exact one, the
    memory is bounded (a few hundred buckets) whatever the count, and two histograms add up, so
    each client process keeps its own and the parent merges them."""

    __slots__ = ("buckets", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        self.buckets[_bucket(seconds)] += 1
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0..1) in seconds: the middle of its bucket, clamped to the observed range."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(max(_middle(index), self.min), self.max)
        return self.max

    def bins(self, count: int = 40) -> list[tuple[float, float, int]]:
        """(low, high, how many) in seconds, `count` bins of equal width on a log scale from min to max."""
        if not self.count:
            return []
        low, high = max(self.min, _FLOOR), max(self.max, _FLOOR)
        if high <= low * 1.0001:
            return [(low, high, self.count)]
        edges = [low * (high / low) ** (i / count) for i in range(count + 1)]
        counts = [0] * count
        span = math.log(high / low)
        for index, n in self.buckets.items():
            at = min(max(_middle(index), low), high)
            slot = min(count - 1, int(math.log(at / low) / span * count))
            counts[slot] += n
        return [(edges[i], edges[i + 1], counts[i]) for i in range(count)]

    def summary_ms(self) -> dict[str, float | int | None]:
        """count, mean, p50, p90, p99, max in milliseconds (rounded to 0.01 ms)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 2)

        return {
            "count": self.count,
            "mean_ms": ms(self.total / self.count) if self.count else None,
            "p50_ms": ms(self.percentile(0.50)),
            "p90_ms": ms(self.percentile(0.90)),
            "p99_ms": ms(self.percentile(0.99)),
            "max_ms": ms(self.max) if self.count else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "buckets": {str(k): v for k, v in sorted(self.buckets.items())},
            "count": self.count,
            "total": self.total,
            "min": self.min if self.count else None,
            "max": self.max,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        histogram = cls()
        histogram.buckets = Counter({int(k): int(v) for k, v in data["buckets"].items()})
        histogram.count = int(data["count"])
        histogram.total = float(data["total"])
        histogram.min = math.inf if data["min"] is None else float(data["min"])
        histogram.max = float(data["max"])
        return histogram

    @classmethod
    def of(cls, samples: Iterable[float]) -> Histogram:
        histogram = cls()
        for sample in samples:
            histogram.record(sample)
        return histogram


def _bucket(seconds: float) -> int:
    if seconds <= _FLOOR:
        return 0
    return int(math.log(seconds / _FLOOR) / _LOG_GROWTH) + 1


def _middle(index: int) -> float:
    if index == 0:
        return _FLOOR
    return _FLOOR * _GROWTH ** (index - 0.5)


def rate_series(
    times: Iterable[float], start: float, end: float, step: float, window: float | None = None
) -> list[tuple[float, float]]:
    """Events per second every `step` seconds from `start` to `end`, each over the `window` seconds
    before it (default: `step`; a longer window smooths the bursts of batched work): (seconds since
    `start`, rate). Events outside the span are ignored."""
    window = max(window or step, step)
    ordered = sorted(t for t in times if start <= t <= end)
    points, low, high = [], 0, 0
    for k in range(1, max(1, math.ceil((end - start) / step - 1e-9)) + 1):
        at = start + k * step
        while high < len(ordered) and ordered[high] <= at:
            high += 1
        while low < high and ordered[low] < at - window:
            low += 1
        points.append((round(k * step, 3), round((high - low) / min(window, k * step), 1)))
    return points


def progress_series(times: Iterable[float], start: float, end: float, step: float) -> list[tuple[float, float]]:
    """How many events happened by each `step` from `start` to `end`: (seconds since `start`, count)."""
    ordered = sorted(times)
    points, seen = [(0.0, float(sum(1 for t in ordered if t <= start)))], 0
    for k in range(1, max(1, math.ceil((end - start) / step - 1e-9)) + 1):
        at = start + k * step
        while seen < len(ordered) and ordered[seen] <= at:
            seen += 1
        points.append((round(k * step, 3), float(seen)))
    return points


def series_step(duration: float, points: int = 120) -> float:
    """A window length that gives about `points` windows over `duration`, rounded to a readable value."""
    raw = max(duration / points, 0.01)
    for nice in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 30, 60):
        if nice >= raw:
            return nice
    return 60.0
