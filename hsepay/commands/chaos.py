"""`hsepay chaos`: break things under order load and check that no money is lost or duplicated."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer

from hsepay import embedded, registry
from hsepay.chaos.faults import KINDS, CommandPostgres, EmbeddedPostgres, EmbeddedTansu, KraftScripts, random_plan
from hsepay.commands.common import (
    EXIT_DOMAIN,
    EXIT_USAGE,
    JsonOption,
    console,
    err_console,
    execute,
    fail,
    print_json,
)
from hsepay.config import ConfigError, get_settings
from hsepay.ports import free_port


def _scratch_databases(settings, work_dir: Path, seed: int) -> tuple[dict[str, str], EmbeddedPostgres | None]:
    """Fresh databases for the run: on the configured servers, or on a private embedded server."""
    from hsepay.scratch import scratch_databases

    names = {spec.name: f"hsepay_chaos_{seed}_{spec.name}" for spec in registry.with_database()}
    urls, home = scratch_databases(settings, names, work_dir / "pg-home")
    return urls, EmbeddedPostgres(home) if home is not None else None


def chaos(
    seed: Annotated[int | None, typer.Option(help="Seed of the fault plan and the load (default: random).")] = None,
    orders: Annotated[int, typer.Option(min=1, max=1_000_000, help="Orders placed over HTTP.")] = 3000,
    rate: Annotated[float, typer.Option(min=1, max=5000, help="Orders per second.")] = 100.0,
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Users ordering (some poor, some unknown).")] = 60,
    faults: Annotated[str, typer.Option(help=f"Fault kinds to draw from: {', '.join(KINDS)}.")] = "kill-role",
    count: Annotated[int, typer.Option(min=0, max=1000, help="Faults in the plan.")] = 10,
    broker_down: Annotated[float, typer.Option(min=0, help="Seconds a killed broker node stays down.")] = 15.0,
    kraft_ctl: Annotated[
        Path | None, typer.Option(help="node-ctl.sh of an Apache Kafka cluster (.ci/kafka) for broker faults.")
    ] = None,
    kraft_workdir: Annotated[Path | None, typer.Option(help="That cluster's work directory.")] = None,
    pg_stop: Annotated[str | None, typer.Option(help="Command that stops a configured PostgreSQL.")] = None,
    pg_start: Annotated[str | None, typer.Option(help="Command that starts it again.")] = None,
    settle_timeout: Annotated[float, typer.Option(min=1, help="Seconds every order has after the last fault.")] = 30,
    as_json: JsonOption = False,
) -> None:
    """Run every role as its own process, place orders over HTTP and inject faults; exit 1 unless
    every order ends final, nothing is debited twice and the audit is clean.

    Runs on scratch databases and topics of its own (on the configured servers, or on embedded ones
    under HSEPAY_DATA_DIR/chaos-SEED), so it never touches your data. With HSEPAY_KAFKA unset it
    uses an embedded broker of its own, which broker faults kill (losing every message).

    Example: hsepay chaos --seed 7 --orders 3000 --faults kill-role,broker-kill,pg-restart --count 12
    """
    import psycopg

    from hsepay.chaos.run import ChaosSetup, role_commands, run_chaos

    kinds = [kind.strip() for kind in faults.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise typer.BadParameter(
            f"unknown fault kinds {unknown}; choose from {', '.join(KINDS)}", param_hint="--faults"
        )
    if (kraft_ctl is None) != (kraft_workdir is None):
        raise typer.BadParameter("give both --kraft-ctl and --kraft-workdir", param_hint="--kraft-ctl")
    if (pg_stop is None) != (pg_start is None):
        raise typer.BadParameter("give both --pg-stop and --pg-start", param_hint="--pg-stop")
    seed = random.randrange(1, 1_000_000) if seed is None else seed
    try:
        settings = get_settings()
        work_dir = settings.data_dir / f"chaos-{seed}"
        work_dir.mkdir(parents=True, exist_ok=True)
        db_urls, private_pg = _scratch_databases(settings, work_dir, seed)
    except (ConfigError, embedded.EmbeddedError, psycopg.Error, OSError) as exc:
        raise fail(f"chaos databases unavailable: {exc}", EXIT_USAGE) from None

    environ = {
        "HSEPAY_DATA_DIR": str(work_dir / "data"),
        "HSEPAY_PAYMENTS_DB": db_urls["payments"],
        "HSEPAY_ORDERS_DB": db_urls["orders"],
        "HSEPAY_REDRIVE_AFTER": "5",
        "HSEPAY_REDRIVE_INTERVAL": "1",
        "HSEPAY_MAX_BACKOFF": "2",
    }
    broker_control = None
    if settings.kafka.bootstrap_servers:
        environ.update(
            HSEPAY_KAFKA=settings.kafka.bootstrap_servers,
            HSEPAY_ORDERS_TOPIC=f"chaos-{seed}-orders",
            HSEPAY_PAYMENT_STATUS_TOPIC=f"chaos-{seed}-payment-status",
            HSEPAY_GROUP_PREFIX=f"chaos-{seed}",
        )
        if kraft_ctl and kraft_workdir:
            broker_control = KraftScripts(kraft_ctl, kraft_workdir)
    else:
        port = free_port()
        environ["HSEPAY_KAFKA"] = embedded.ensure_broker(work_dir / "broker-home", port=port)
        broker_control = EmbeddedTansu(work_dir / "broker-home", port)
    postgres_control = CommandPostgres(pg_stop, pg_start) if pg_stop and pg_start else private_pg
    if any(k.startswith("broker-") for k in kinds) and broker_control is None:
        raise typer.BadParameter(
            "broker faults on HSEPAY_KAFKA need --kraft-ctl/--kraft-workdir", param_hint="--faults"
        )
    if "pg-restart" in kinds and postgres_control is None:
        raise typer.BadParameter("pg-restart on a configured server needs --pg-stop and --pg-start", "--faults")

    setup = ChaosSetup(environ=environ, work_dir=work_dir, broker=broker_control, postgres=postgres_control)
    roles = list(role_commands({}, setup.relays_per_service))
    plan = random_plan(seed, orders / rate, roles=roles, kinds=kinds, count=count, broker_down=broker_down)
    (err_console if as_json else console).print(
        f"chaos seed={seed}: {len(plan)} faults over {orders / rate:.0f}s; logs in {work_dir}", markup=False
    )

    async def body():
        return await run_chaos(
            setup, seed=seed, orders=orders, rate=rate, users=users, plan=plan, settle_timeout=settle_timeout
        )

    try:
        report = execute(body)
    finally:
        if not settings.kafka.bootstrap_servers:
            embedded.stop_broker(work_dir / "broker-home")
        if private_pg is not None:
            embedded.stop_postgres(private_pg.data_dir)
    if as_json:
        print_json(report.to_json())
    else:
        for record in report.faults:
            console.print(
                f"  {record.fault.at:6.1f}s {record.fault.label():28} {record.detail:10} "
                f"recovered in {record.recovery_s if record.recovery_s is not None else '-'}s",
                markup=False,
            )
        console.print(report.verdict(), markup=False)
    if not report.passed:
        raise typer.Exit(EXIT_DOMAIN)
