"""Every metric hsepay exports: name, type, labels and meaning, in one place.

The dashboard test checks each panel's query against this list, and docs/OPERATIONS.md explains
them. Names follow Prometheus conventions: base units (`_seconds`), `_total` for counters, and the
unit of a count in the name (`_rows`, `_messages`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INSTRUMENTED", "LIVE", "Family", "exported_names"]


@dataclass(frozen=True)
class Family:
    kind: str  # counter, gauge, histogram
    help: str
    labels: tuple[str, ...] = ("service",)


LIVE: dict[str, Family] = {
    # Read from the service database at scrape time (cached ~1 s); every process that has the
    # database exports them, so dashboards take max by (service).
    "hsepay_database_up": Family("gauge", "1 if the last scrape-time query of the service database succeeded"),
    "hsepay_outbox_pending_rows": Family("gauge", "outbox rows not yet published"),
    "hsepay_outbox_oldest_pending_age_seconds": Family("gauge", "age of the oldest unpublished outbox row (0: none)"),
    "hsepay_inbox_quarantined_messages": Family("gauge", "messages in quarantine now (hsepay inbox retry re-applies)"),
    # From the relay's RelayStats.
    "hsepay_outbox_published_total": Family("counter", "outbox rows published and acknowledged by the broker"),
    "hsepay_outbox_publish_failures_total": Family("counter", "failed relay rounds (publish, database, lock)"),
    "hsepay_relay_active": Family("gauge", "1 if this process's relay holds the outbox lock and publishes"),
    "hsepay_relay_standby": Family("gauge", "1 if this process's relay waits for the lock"),
    # From the inbox consumer's ConsumerStats.
    "hsepay_inbox_processed_total": Family("counter", "events applied through the inbox"),
    "hsepay_inbox_duplicates_total": Family("counter", "redelivered events skipped by the inbox"),
    "hsepay_inbox_quarantined_total": Family("counter", "events quarantined by this process"),
    "hsepay_consumer_errors_total": Family("counter", "consumer failures (database outages, broker sessions)"),
    "hsepay_consumer_joined": Family("gauge", "1 if the consumer holds its share of partitions in its group"),
    "hsepay_consumer_assigned_partitions": Family("gauge", "partitions assigned to this process's consumer"),
    "hsepay_consumer_lag_messages": Family(
        "gauge", "messages of an assigned partition not yet consumed", ("service", "topic", "partition")
    ),
    # From the background jobs of a service (hsepay.periodic.Periodic with a counter).
    "hsepay_redrives_total": Family("counter", "payment requests re-sent for orders left created"),
    # The broker, as seen by worker processes.
    "hsepay_broker_up": Family("gauge", "1 if the broker answered the last readiness check", ()),
}

INSTRUMENTED: dict[str, Family] = {
    "hsepay_http_requests_total": Family(
        "counter", "HTTP requests answered, by route template and status", ("service", "method", "route", "status")
    ),
    "hsepay_http_request_duration_seconds": Family(
        "histogram", "time to answer an HTTP request", ("service", "method", "route")
    ),
    "hsepay_saga_duration_seconds": Family(
        "histogram", "from an order's creation to its final status (database clock)", ("outcome",)
    ),
    "hsepay_gateway_upstream_failures_total": Family(
        "counter", "gateway requests an upstream did not answer (timeout or unavailable)", ("upstream", "reason")
    ),
    "hsepay_build_info": Family("gauge", "1, labelled with the hsepay version", ("version",)),
}


def exported_names() -> set[str]:
    """Every sample name a scrape can show (histograms as _bucket, _sum and _count)."""
    names: set[str] = set()
    for name, family in {**LIVE, **INSTRUMENTED}.items():
        if family.kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            names.add(name)
    return names
