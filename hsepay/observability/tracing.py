"""OpenTelemetry tracing: optional (`pip install 'hsepay[tracing]'`), off by default, free when off.

When off, nothing here imports OpenTelemetry and no hook is registered: the relay's header hook
list is empty, the HTTP middleware has no span factory, log lines carry no trace id.

When on, one order is one trace across both services:

    POST /orders (server span, orders API; parent: the caller's `traceparent`, e.g. the gateway's)
      └ create orders (producer span; its context is the outbox row's `traceparent` header)
          └ process orders (consumer span, payments; parent read from the Kafka header)
              └ create payment-status (producer span; causation = the event being processed)
                  └ process payment-status (consumer span, orders: the order settles)

The relay copies the outbox row's headers to Kafka unchanged, so it needs no tracing of its own.
A consumer applies a batch in one transaction: each event gets its own consumer span (all of them
as long as the transaction), and a message created while handling an event is parented to that
event's span through its causation id. A re-driven payment request has no causing event and
starts a trace of its own; logs join it to the order by `order_id`.

Spans go to OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set; the
exporter reads the usual OTEL_* variables (headers, timeout). Service name: OTEL_SERVICE_NAME or
"hsepay"; each span also carries `hsepay.service` (payments, orders, gateway).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hsepay.config import ObservabilitySettings
    from hsepay.relay.inbound import Poison, Ready

__all__ = ["disable", "enable", "enable_from", "enabled", "inject"]

log = logging.getLogger(__name__)

_state: dict[str, Any] = {}
_event_spans: ContextVar[Mapping[str, Any] | None] = ContextVar("hsepay_event_spans", default=None)


def enabled() -> bool:
    return bool(_state)


def wanted(settings: ObservabilitySettings, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if settings.tracing is not None:
        return settings.tracing
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def enable_from(settings: ObservabilitySettings) -> bool:
    """Turn tracing on if the settings ask for it; a missing extra is one warning, not a failure."""
    if not wanted(settings):
        return False
    try:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing is on (HSEPAY_TRACING) but OpenTelemetry is not installed: pip install 'hsepay[tracing]'")
        return False
    processor = None
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is missing: pip install 'hsepay[tracing]'"
            )
        else:
            processor = BatchSpanProcessor(OTLPSpanExporter())
    enable(processor)
    return True


def enable(processor: Any = None, *, service_name: str | None = None) -> None:
    """Start tracing in this process: spans go to `processor` (a SpanProcessor; None: propagated only)."""
    from opentelemetry.propagators.textmap import DefaultGetter  # noqa: F401  (fails early if the API is absent)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from hsepay import __version__
    from hsepay.observability import endpoints, logs
    from hsepay.relay import hooks

    disable()
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name or os.environ.get("OTEL_SERVICE_NAME", "hsepay")})
    )
    if processor is not None:
        provider.add_span_processor(processor)
    _state.update(
        provider=provider,
        tracer=provider.get_tracer("hsepay", __version__),
        propagator=TraceContextTextMapPropagator(),
    )
    hooks.header_hooks.append(_traceparent)
    hooks.batch_hooks.append(_consumer_spans)
    endpoints.server_span = _server_span
    logs.trace_fields = _trace_fields


def disable() -> None:
    """Stop tracing (tests); flushes and shuts down the span processors."""
    if not _state:
        return
    from hsepay.observability import endpoints, logs
    from hsepay.relay import hooks

    with contextlib.suppress(ValueError):
        hooks.header_hooks.remove(_traceparent)
    with contextlib.suppress(ValueError):
        hooks.batch_hooks.remove(_consumer_spans)
    endpoints.server_span = None
    logs.trace_fields = None
    _state["provider"].shutdown()
    _state.clear()


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current span's `traceparent` to outgoing HTTP headers (the gateway's upstream calls)."""
    if _state:
        _state["propagator"].inject(headers)
    return headers


# --- hooks ---------------------------------------------------------------------------------------


def _trace_fields() -> Mapping[str, str]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


@contextlib.contextmanager
def _server_span(scope: Mapping[str, Any], service: str) -> Iterator[None]:
    from opentelemetry import trace

    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
    parent = _state["propagator"].extract(carrier)
    method = scope["method"]
    with _state["tracer"].start_as_current_span(
        method, context=parent, kind=trace.SpanKind.SERVER, record_exception=True
    ) as span:
        span.set_attribute("http.request.method", method)
        span.set_attribute("url.path", scope["path"])
        span.set_attribute("hsepay.service", service)
        try:
            yield
        finally:
            # The route template is known only after routing: name the span by it (semantic conventions).
            route = scope.get("path_template")
            if route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)


def _traceparent(topic: str, causation_id: str | None) -> Mapping[str, str]:
    """The header of a new message: the context of a short 'create' span under its cause."""
    from opentelemetry import trace

    causes = _event_spans.get()
    parent_span = causes.get(causation_id) if causes and causation_id else None
    context = trace.set_span_in_context(parent_span) if parent_span is not None else None
    with _state["tracer"].start_as_current_span(
        f"create {topic}",
        context=context,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "create",
            "messaging.destination.name": topic,
        },
    ):
        carrier: dict[str, str] = {}
        _state["propagator"].inject(carrier)
    return {"traceparent": carrier["traceparent"]} if "traceparent" in carrier else {}


@contextlib.contextmanager
def _consumer_spans(consumer: str, items: Sequence[Ready | Poison]) -> Iterator[None]:
    """One 'process <topic>' span per event of an inbox transaction, parented by its traceparent."""
    from opentelemetry import trace

    tracer, propagator = _state["tracer"], _state["propagator"]
    spans: dict[str, Any] = {}
    for item in items:
        message = item.message
        parent = propagator.extract(message.headers) if "traceparent" in message.headers else None
        span = tracer.start_span(
            f"process {message.topic}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.topic,
                "messaging.destination.partition.id": str(message.partition),
                "messaging.kafka.offset": message.offset,
                "messaging.message.id": str(item.event_id),
                "messaging.consumer.group.name": consumer,
                "hsepay.service": consumer,
                "hsepay.event_type": item.event_type or "",
            },
        )
        spans[str(item.event_id)] = span
    token = _event_spans.set(spans)
    only = next(iter(spans.values())) if len(spans) == 1 else None
    try:
        with trace.use_span(only, end_on_exit=False) if only is not None else contextlib.nullcontext():
            yield
    except BaseException as exc:
        for span in spans.values():
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        _event_spans.reset(token)
        for span in spans.values():
            span.end()
