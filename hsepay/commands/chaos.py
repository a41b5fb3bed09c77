"""`hsepay chaos`: break things under order load and check that no money is lost or duplicated."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hsepay import embedded, registry
from hsepay.chaos.faults import (
    KINDS,
    NET_KINDS,
    CommandPostgres,
    EmbeddedPostgres,
    EmbeddedTansu,
    KraftScripts,
    random_plan,
)
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

if TYPE_CHECKING:
    from hsepay.chaos.setup import ChaosSetup


def _scratch_databases(settings, work_dir: Path, seed: int) -> tuple[dict[str, str], EmbeddedPostgres | None]:
    """Fresh databases for the run: on the configured servers, or on a private embedded server."""
    from hsepay.scratch import scratch_databases

    names = {spec.name: f"hsepay_chaos_{seed}_{spec.name}" for spec in registry.with_database()}
    urls, home = scratch_databases(settings, names, work_dir / "pg-home")
    return urls, EmbeddedPostgres(home) if home is not None else None


def _network_setup(work_dir: Path, seed: int, binary: Path | None, stack: contextlib.ExitStack) -> ChaosSetup:
    """Private engines behind Toxiproxy (hsepay.chaos.netstack), for the net-* faults."""
    import psycopg

    from hsepay.chaos.netstack import network_stack
    from hsepay.chaos.network import find_toxiproxy
    from hsepay.chaos.setup import ChaosSetup

    binary = binary or find_toxiproxy()
    if binary is None:
        raise typer.BadParameter(
            "network faults need toxiproxy-server: --toxiproxy, HSEPAY_TOXIPROXY or PATH "
            "(.ci/stage-netfault.sh builds it from the Go module proxy)",
            param_hint="--faults",
        )
    try:
        net = stack.enter_context(network_stack(work_dir / "net", binary, prefix=f"chaos_{seed}"))
    except (embedded.EmbeddedError, psycopg.Error, OSError, RuntimeError) as exc:
        raise fail(f"chaos network stack unavailable: {exc}", EXIT_USAGE) from None
    broker_port = int(net.network.proxies["broker"].rpartition(":")[2])
    upstream = int(net.observer_environ["HSEPAY_KAFKA"].rpartition(":")[2])
    return ChaosSetup(
        environ={"HSEPAY_DATA_DIR": str(work_dir / "data"), **net.roles_environ},
        observer_environ=net.observer_environ,
        work_dir=work_dir,
        network=net.network,
        postgres=net.postgres,
        broker=EmbeddedTansu(net.broker_home, upstream, advertised_port=broker_port),
    )


def chaos(
    seed: Annotated[int | None, typer.Option(help="Seed of the fault plan and the load (default: random).")] = None,
    orders: Annotated[int, typer.Option(min=1, max=1_000_000, help="Orders placed over HTTP.")] = 3000,
    rate: Annotated[float, typer.Option(min=1, max=5000, help="Orders per second.")] = 100.0,
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Users ordering (some poor, some unknown).")] = 60,
    faults: Annotated[str, typer.Option(help=f"Fault kinds to draw from: {', '.join(KINDS)}.")] = "kill-role",
    count: Annotated[int, typer.Option(min=0, max=1000, help="Faults in the plan.")] = 10,
    duration: Annotated[
        float | None, typer.Option(min=1, help="Seconds of load (instead of --orders): orders = rate × duration.")
    ] = None,
    fault_every: Annotated[
        float | None, typer.Option(min=1, help="One fault every this many seconds (instead of --count).")
    ] = None,
    sample_every: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            help="Record every role's memory and descriptors, the databases' connections and the consumer lag "
            "this often, check they stay flat, and draw them (a soak).",
        ),
    ] = None,
    report_dir: Annotated[
        Path | None, typer.Option(help="Where a soak's curves and JSON go (default: the run's directory).")
    ] = None,
    toxiproxy: Annotated[
        Path | None, typer.Option(help="toxiproxy-server for net-* faults (default: HSEPAY_TOXIPROXY, PATH).")
    ] = None,
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
    every order ends final, nothing is debited twice and the audit is clean (and, with
    --sample-every, every role's memory, descriptors, connections and lag stay flat).

    Runs on scratch databases and topics of its own (on the configured servers, or on embedded ones
    under HSEPAY_DATA_DIR/chaos-SEED), so it never touches your data. With HSEPAY_KAFKA unset it
    uses an embedded broker of its own, which broker faults kill (losing every message). Network
    faults (net-latency, net-silent, net-reset, net-slow, net-cut) put Toxiproxy between every role
    and private engines of the run's own.

    Example: hsepay chaos --seed 7 --orders 3000 --faults kill-role,broker-kill,pg-restart --count 12

    A one-hour soak: hsepay chaos --duration 3600 --rate 20 --fault-every 180 --sample-every 60
    --faults kill-role,pg-restart,net-silent,net-cut,net-reset,net-latency,net-slow
    """
    from hsepay.bench.svg import series_svg
    from hsepay.chaos.run import role_commands, run_chaos
    from hsepay.chaos.soak import periodic_plan, write_curves

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
    networked = any(kind in NET_KINDS for kind in kinds)
    if networked and (kraft_ctl or pg_stop):
        raise typer.BadParameter("network faults run on engines of their own: no --kraft-*/--pg-*", "--faults")
    seed = random.randrange(1, 1_000_000) if seed is None else seed
    orders = round(rate * duration) if duration else orders
    span = orders / rate
    with contextlib.ExitStack() as stack:
        try:
            settings = get_settings()
            work_dir = settings.data_dir / f"chaos-{seed}"
            work_dir.mkdir(parents=True, exist_ok=True)
        except (ConfigError, OSError) as exc:
            raise fail(f"chaos work directory unavailable: {exc}", EXIT_USAGE) from None
        if networked:
            setup = _network_setup(work_dir, seed, toxiproxy, stack)
        else:
            setup = _local_setup(settings, work_dir, seed, kraft_ctl, kraft_workdir, pg_stop, pg_start, stack)
        setup.environ.update(HSEPAY_REDRIVE_AFTER="5", HSEPAY_REDRIVE_INTERVAL="1", HSEPAY_MAX_BACKOFF="2")
        if any(k.startswith("broker-") for k in kinds) and setup.broker is None:
            raise typer.BadParameter(
                "broker faults on HSEPAY_KAFKA need --kraft-ctl/--kraft-workdir", param_hint="--faults"
            )
        if "pg-restart" in kinds and setup.postgres is None:
            raise typer.BadParameter("pg-restart on a configured server needs --pg-stop and --pg-start", "--faults")
        roles = list(role_commands({}, setup.relays_per_service))
        if fault_every:
            plan = periodic_plan(seed, span, fault_every, roles=roles, kinds=kinds)
        else:
            plan = random_plan(seed, span, roles=roles, kinds=kinds, count=count, broker_down=broker_down)
        (err_console if as_json else console).print(
            f"chaos seed={seed}: {len(plan)} faults over {span:.0f}s; logs in {work_dir}", markup=False
        )

        async def body():
            return await run_chaos(
                setup,
                seed=seed,
                orders=orders,
                rate=rate,
                users=users,
                plan=plan,
                settle_timeout=settle_timeout,
                sample_every=sample_every,
            )

        report = execute(body)
    if sample_every:
        for path in write_curves(report, report_dir or work_dir, series_svg):
            (err_console if as_json else console).print(f"  wrote {path}", markup=False)
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


def _local_setup(settings, work_dir, seed, kraft_ctl, kraft_workdir, pg_stop, pg_start, stack) -> ChaosSetup:
    """Scratch databases and topics on the configured servers, or engines of the run's own."""
    import psycopg

    from hsepay.chaos.setup import ChaosSetup

    try:
        db_urls, private_pg = _scratch_databases(settings, work_dir, seed)
    except (ConfigError, embedded.EmbeddedError, psycopg.Error, OSError) as exc:
        raise fail(f"chaos databases unavailable: {exc}", EXIT_USAGE) from None
    if private_pg is not None:
        stack.callback(embedded.stop_postgres, private_pg.data_dir)
    environ = {
        "HSEPAY_DATA_DIR": str(work_dir / "data"),
        "HSEPAY_PAYMENTS_DB": db_urls["payments"],
        "HSEPAY_ORDERS_DB": db_urls["orders"],
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
        stack.callback(embedded.stop_broker, work_dir / "broker-home")
        broker_control = EmbeddedTansu(work_dir / "broker-home", port)
    postgres_control = CommandPostgres(pg_stop, pg_start) if pg_stop and pg_start else private_pg
    return ChaosSetup(environ=environ, work_dir=work_dir, broker=broker_control, postgres=postgres_control)
