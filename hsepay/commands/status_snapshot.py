"""What `hsepay status` reports: per service, read from its database, the broker and the processes'
metrics ports; one function that gathers a snapshot, used by the Rich view and by --json alike."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from hsepay.registry import ServiceSpec
from hsepay.relay.backlog import outbox_status
from hsepay.relay.quarantine import inbox_status
from hsepay.relay.store import INBOX_PROCESSED
from hsepay.replication import read_promise
from hsepay.resilience import describe
from hsepay.system import System

__all__ = ["THROUGHPUT_WINDOW", "snapshot"]

THROUGHPUT_WINDOW = 60.0
TARGET_TIMEOUT = 2.0


async def _throughput(conn: AsyncConnection, spec: ServiceSpec) -> dict[str, float]:
    """Events per second over the last minute: published (outbox rows marked sent) and applied (inbox)."""
    assert spec.database is not None
    outbox, inbox = spec.database.outbox, spec.database.inbox
    since = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, THROUGHPUT_WINDOW)
    published = (
        await conn.execute(select(func.count()).select_from(outbox).where(outbox.c.sent_at > since))
    ).scalar_one()
    applied = (
        await conn.execute(
            select(func.count())
            .select_from(inbox)
            .where(inbox.c.consumer == spec.name, inbox.c.status == INBOX_PROCESSED, inbox.c.processed_at > since)
        )
    ).scalar_one()
    return {
        "published_per_s": round(published / THROUGHPUT_WINDOW, 2),
        "applied_per_s": round(applied / THROUGHPUT_WINDOW, 2),
    }


async def _service(system: System, spec: ServiceSpec) -> dict[str, Any]:
    from hsepay.commands.asking import ask_broker
    from hsepay.relay.broker import partition_offsets

    assert spec.database is not None
    report: dict[str, Any] = {"database_error": None, "database": None}
    try:
        async with system.engine(spec.name).connect() as conn:
            promise = await read_promise(conn)
            report["database"] = {**promise.to_json(), "summary": promise.describe(spec.name)}
            report["outbox"] = await outbox_status(conn, spec.database.outbox)
            report["inbox"] = await inbox_status(conn, spec.database.inbox, spec.name, show=5)
            report.update(await _throughput(conn, spec))
    except Exception as exc:  # one service's database down: the others are still reported
        report["database_error"] = describe(exc)
    kafka = system.settings.kafka
    question = functools.partial(partition_offsets, group_id=kafka.group_of(spec.name), topics=spec.consumes(kafka))
    offsets, error = await ask_broker(system[spec.name], question)
    report["broker_error"] = error
    if offsets is not None:
        lag: dict[str, dict[str, int]] = {}
        for tp, (end, committed) in offsets.items():
            lag.setdefault(tp.topic, {})[str(tp.partition)] = end - (committed or 0)
        report["lag"] = lag
        report["lag_total"] = sum(n for partitions in lag.values() for n in partitions.values())
    else:
        report["lag"], report["lag_total"] = None, None
    return report


def _parse_metrics(text: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "hsepay_relay_active": "relay_active",
        "hsepay_relay_standby": "relay_standby",
        "hsepay_consumer_joined": "consumer_joined",
        "hsepay_outbox_published": "published",
        "hsepay_inbox_processed": "processed",
        "hsepay_inbox_quarantined": "quarantined",
    }
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        key = wanted.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            found.setdefault(sample.labels.get("service", ""), {})[key] = sample.value
    return found


async def _target(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    url = url.rstrip("/")
    report: dict[str, Any] = {"target": url, "ready": False, "checks": {}, "services": {}, "error": None}
    try:
        ready, metrics = await asyncio.gather(client.get(f"{url}/health/ready"), client.get(f"{url}/metrics"))
        body = ready.json()
        report["ready"] = ready.status_code == 200
        report["checks"] = body.get("checks", {}) if isinstance(body, dict) else {}
        report["services"] = _parse_metrics(metrics.text) if metrics.status_code == 200 else {}
    except (httpx.HTTPError, ValueError) as exc:
        report["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return report


def _errors(services: dict[str, Any], processes: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The latest errors worth an operator's eye, newest quarantined first."""
    errors: list[dict[str, str]] = []
    for name, report in services.items():
        for kind in ("database_error", "broker_error"):
            if report.get(kind) and report[kind] != "no broker running":
                errors.append({"where": f"{name} {kind.split('_')[0]}", "error": report[kind]})
        for q in (report.get("inbox") or {}).get("quarantined_recent", []):
            errors.append({"where": f"{name} quarantine {q['event_id']}", "error": q["error"] or ""})
    for process in processes:
        if process["error"]:
            errors.append({"where": process["target"], "error": process["error"]})
        for check, answer in process["checks"].items():
            if isinstance(answer, dict) and (answer.get("last_error") or answer.get("error")):
                errors.append(
                    {"where": f"{process['target']} {check}", "error": answer.get("last_error") or answer["error"]}
                )
    return errors


async def snapshot(system: System, specs: Sequence[ServiceSpec], targets: Sequence[str]) -> dict[str, Any]:
    """Everything `hsepay status` shows, once."""
    async with httpx.AsyncClient(timeout=TARGET_TIMEOUT) as client:
        reports, processes = await asyncio.gather(
            asyncio.gather(*(_service(system, spec) for spec in specs)),
            asyncio.gather(*(_target(client, url) for url in targets)),
        )
    services = {spec.name: report for spec, report in zip(specs, reports, strict=True)}
    return {"services": services, "processes": list(processes), "errors": _errors(services, list(processes))}
