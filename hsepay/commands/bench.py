"""`hsepay bench`: the saga's throughput and latency, measured end to end."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import psycopg
import typer
from psycopg import sql

from hsepay import embedded, migrate, registry
from hsepay.bench import measure_saga
from hsepay.bootstrap import Runtime
from hsepay.commands.common import EXIT_DOMAIN, EXIT_USAGE, JsonOption, execute, fail, print_json, print_table
from hsepay.config import ConfigError, get_settings, normalise_db_url

BENCH_DATABASES = {spec.name: f"hsepay_bench_{spec.name}" for spec in registry.with_database()}


def _scratch_databases(settings) -> dict[str, str]:
    """Fresh, migrated bench databases on the embedded server (dropped and made anew each run)."""
    server = embedded.ensure_postgres(settings.data_dir)
    with psycopg.connect(server, autocommit=True) as conn:
        for name in BENCH_DATABASES.values():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    uris = embedded.ensure_databases(server, list(BENCH_DATABASES.values()))
    urls = {}
    for service, name in BENCH_DATABASES.items():
        urls[service] = normalise_db_url(uris[name], "bench")
        migrate.upgrade(service, urls[service], variable="bench")
    return urls


def bench(
    orders: Annotated[int, typer.Option(min=1, max=1_000_000, help="Orders in the backlog to drain.")] = 10_000,
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Distinct paying users.")] = 100,
    latency_samples: Annotated[int, typer.Option(min=0, max=10_000, help="Orders timed one by one.")] = 200,
    rate: Annotated[float, typer.Option(min=1, max=1000, help="Orders per second in the latency phase.")] = 50,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds the drain may take before giving up.")] = 600,
    as_json: JsonOption = False,
) -> None:
    """Drain a backlog of orders through the whole saga, then time single orders; audit at the end.

    Runs on scratch databases of the embedded PostgreSQL (hsepay_bench_*, recreated each run) and on
    topics of its own, so it never touches your data. Exit 1 if the audit fails.

    Example: hsepay bench --orders 10000 --latency-samples 200 --json
    """
    try:
        settings = get_settings()
        urls = _scratch_databases(settings)
    except (ConfigError, embedded.EmbeddedError, psycopg.Error) as exc:
        raise fail(f"bench databases unavailable: {exc}", EXIT_USAGE) from None
    settings = settings.with_overrides(
        db=replace(settings.db, payments_url=urls["payments"], orders_url=urls["orders"])
    )
    rt = Runtime(settings=settings, db_urls=urls)

    async def body():
        try:
            return await measure_saga(
                rt, orders_count=orders, users=users, latency_samples=latency_samples, rate=rate, timeout=timeout
            )
        finally:
            await rt.dispose()

    try:
        result = execute(body)
    except TimeoutError as exc:
        raise fail(str(exc), EXIT_DOMAIN) from None
    if as_json:
        print_json(result.to_json())
    else:
        print_table("hsepay bench", ["measure", "value"], [(k, v) for k, v in result.to_json().items()])
    if not result.audit_ok:
        raise fail("audit failed after the bench run", EXIT_DOMAIN)
