"""Prometheus metrics: instrumented counters and histograms, plus the live sources read at scrape time.

Several worker processes per API (uvicorn --workers, or processes sharing a port): set
PROMETHEUS_MULTIPROC_DIR to an empty directory of that service's own before the processes start
(prometheus_client's multiprocess mode). The counters and histograms of every process are then
written there and each scrape, whichever process answers it, sums them all. The live sources
(database gauges, relay and consumer stats) are read by the answering process alone: the database
gauges are the same from every process, and workers are processes of their own.

Without the variable, each process keeps its metrics in memory (the default, and the cheaper).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from hsepay import __version__
from hsepay.observability import catalog, sources

__all__ = [
    "CONTENT_TYPE",
    "HTTP_DURATION",
    "HTTP_REQUESTS",
    "MULTIPROCESS",
    "SAGA_DURATION",
    "UPSTREAM_FAILURES",
    "exposition",
    "observe_request",
    "observe_settled",
]

CONTENT_TYPE = "text/plain; version=0.0.4"  # the text format every Prometheus 2.x reads; the charset is added
disable_created_metrics()  # no `_created` series: Prometheus ignores them and they double the output
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

_registry = CollectorRegistry(auto_describe=False)


def _declared(name: str, cls, **kwargs):
    family = catalog.INSTRUMENTED[name]
    return cls(name.removesuffix("_total"), family.help, family.labels, registry=_registry, **kwargs)


HTTP_REQUESTS: Counter = _declared("hsepay_http_requests_total", Counter)
HTTP_DURATION: Histogram = _declared(
    "hsepay_http_request_duration_seconds",
    Histogram,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SAGA_DURATION: Histogram = _declared(
    "hsepay_saga_duration_seconds",
    Histogram,
    buckets=(0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
UPSTREAM_FAILURES: Counter = _declared("hsepay_gateway_upstream_failures_total", Counter)

_request_children: dict[tuple[str, str, str, int], tuple[object, object]] = {}


def observe_request(service: str, method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request (children cached: labels() validates on every call)."""
    key = (service, method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = (
            HTTP_REQUESTS.labels(service, method, route, str(status)),
            HTTP_DURATION.labels(service, method, route),
        )
        _request_children[key] = children
    counter, histogram = children
    counter.inc()
    histogram.observe(seconds)


def observe_settled(settled: Iterable[tuple[str, float]]) -> None:
    """(final status, seconds from creation) of each order that just settled."""
    for status, seconds in settled:
        SAGA_DURATION.labels(status).observe(max(seconds, 0.0))


class _LiveCollector:
    """Samples of the process's sources, grouped into the families of `catalog.LIVE`."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for source in sources.active():
            for sample in source.samples():
                family = families.get(sample.family)
                if family is None:
                    declared = catalog.LIVE[sample.family]
                    cls = CounterMetricFamily if declared.kind == "counter" else GaugeMetricFamily
                    family = families[sample.family] = cls(
                        sample.family.removesuffix("_total"), declared.help, labels=declared.labels
                    )
                family.add_metric([sample.labels[label] for label in catalog.LIVE[sample.family].labels], sample.value)
        build = GaugeMetricFamily(
            "hsepay_build_info", catalog.INSTRUMENTED["hsepay_build_info"].help, labels=["version"]
        )
        build.add_metric([__version__], 1)
        return [*families.values(), build]


def _exposed() -> CollectorRegistry:
    if not MULTIPROCESS:
        _registry.register(_LiveCollector())
        _registry.register(ProcessCollector(registry=None))
        return _registry
    from prometheus_client.multiprocess import MultiProcessCollector

    exposed = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(exposed)
    exposed.register(_LiveCollector())
    exposed.register(ProcessCollector(registry=None))
    return exposed


_EXPOSED = _exposed()


async def exposition() -> bytes:
    """The Prometheus text of this process (and, in multiprocess mode, of its siblings)."""
    await sources.refresh_all()
    return generate_latest(_EXPOSED)
