"""`hsepay bench`: the scenarios of DESIGN §9 (drain, latency, http, relay), each audited afterwards.

A little over 300 lines: four commands, each mostly its typed options and their help; the scenarios
themselves live in hsepay/bench/.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from hsepay import embedded
from hsepay.commands.common import EXIT_DOMAIN, EXIT_USAGE, JsonOption, console, execute, fail, print_json, print_table
from hsepay.config import ConfigError, Settings, get_settings

app = typer.Typer(
    help=(
        "End-to-end benchmarks on scratch databases and topics of their own, every role its own process; "
        "each run is audited. Try: hsepay bench --quick"
    ),
)

ReportOption = Annotated[
    Path | None,
    typer.Option("--report", help="Also write a self-contained HTML report (histogram, rates over time) here."),
]
OneProcessOption = Annotated[
    bool,
    typer.Option("--one-process", help="Run every role in one `hsepay up` process instead of one process per role."),
]
AuthOption = Annotated[
    bool, typer.Option("--auth", help="Serve with authentication: every user orders with its own bearer token.")
]
TimeoutOption = Annotated[float, typer.Option(min=1, help="Seconds every order has to become final.")]


class Watch(StrEnum):
    http = "http"
    db = "db"


@dataclass(frozen=True)
class Sizes:
    """How big each scenario runs when `hsepay bench` runs them all."""

    samples: int
    rate: float
    latency_users: int
    connections: int
    clients: int
    warmup: float
    duration: float
    http_users: int
    backlog: int
    drain_users: int
    rows: int


FULL = Sizes(500, 50, 100, 64, 2, 3.0, 20.0, 1000, 20_000, 100, 100_000)
QUICK = Sizes(20, 50, 10, 8, 2, 0.5, 2.0, 50, 300, 10, 2_000)
"""Seconds of load per scenario, not a timing: CI runs it to prove that every scenario works and audits clean.
The run takes longer than its load (84 s measured on a 2-core box): each scenario starts its roles as
processes and makes scratch databases and topics first."""


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def _run(body) -> Any:
    """Run a scenario; a setup failure exits 2, a stalled or dead system exits 1, each with one line."""

    import psycopg

    async def guarded():
        try:
            return await body()
        except (embedded.EmbeddedError, psycopg.OperationalError, OSError) as exc:
            raise ConfigError(f"bench setup failed: {exc}") from None

    try:
        return execute(guarded)
    except typer.Exit:  # already reported (a RuntimeError too, for click)
        raise
    except (TimeoutError, RuntimeError) as exc:
        raise fail(f"bench failed: {exc}", EXIT_DOMAIN) from None


def _show(results: list[Any], as_json: bool, report: Path | None) -> None:
    if report is not None:
        from hsepay.bench.report import write_report

        write_report(report, results)
    if as_json:
        if len(results) == 1:
            print_json(results[0].to_json())
        else:
            print_json({"ok": all(r.verdict.ok for r in results), "scenarios": [r.to_json() for r in results]})
    else:
        from hsepay.bench.results import process_header, process_rows

        for result in results:
            name = result.to_json()["scenario"]
            print_table(f"hsepay bench {name} — {result.context.line()}", ["figure", "value"], result.table_rows())
            phase, units, unit = result.processes()
            if phase is not None and phase.processes:
                print_table(f"{name}: processes", process_header(unit), process_rows(phase, units, unit))
            for line in result.verdict.notes:
                console.print(f"note: {line}", markup=False)
            for line in result.verdict.problems:
                console.print(f"[bold red]problem:[/] {line}", highlight=False)
            console.print(f"{name}: audit {'ok' if result.verdict.ok else 'FAILED'}", markup=False)
        if report is not None:
            console.print(f"report: {report}", markup=False)
    if not all(r.verdict.ok for r in results):
        raise typer.Exit(EXIT_DOMAIN)


@app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Every scenario small: does it all work? About 1.5 minutes on a 2-core box (84 s measured), "
            "nearly all of it starting each scenario's role processes and scratch databases.",
        ),
    ] = False,
    one_process: OneProcessOption = False,
    as_json: JsonOption = False,
    report: ReportOption = None,
) -> None:
    """Run every scenario: latency, http and drain on one running saga, then relay; audit each.

    Runs on scratch databases (hsepay_bench_*, next to the configured ones or on the embedded
    server) and topics of its own, so it never touches your data; with HSEPAY_KAFKA unset it starts
    an embedded broker of its own. Other HSEPAY_* settings (batch sizes, pools) pass to the roles.
    Exit 1 if an audit fails.

    Example: hsepay bench --quick --report bench.html
    """
    if ctx.invoked_subcommand is not None:
        if quick or one_process or as_json or report:
            raise typer.BadParameter("give --quick/--json/--report/--one-process after the scenario's name")
        return
    sizes = QUICK if quick else FULL
    settings = _settings()

    async def body():
        from hsepay.bench.drain import drain_backlogs
        from hsepay.bench.http import http as run_http
        from hsepay.bench.latency import latency as run_latency
        from hsepay.bench.relay import relay as run_relay
        from hsepay.bench.session import SagaSession

        async with SagaSession.open(settings, one_process=one_process) as session:
            results = [
                await run_latency(
                    session, samples=sizes.samples, rate=sizes.rate, users=sizes.latency_users, timeout=30
                ),
                await run_http(
                    session,
                    connections=sizes.connections,
                    clients=sizes.clients,
                    warmup=sizes.warmup,
                    duration=sizes.duration,
                    users=sizes.http_users,
                    settle_timeout=120,
                ),
                await drain_backlogs(session, sizes=[sizes.backlog], users=sizes.drain_users, timeout=600),
            ]
        results.append(await run_relay(settings, rows=sizes.rows, timeout=600))
        return results

    _show(_run(body), as_json, report)


@app.command()
def drain(
    orders: Annotated[
        list[int] | None,
        typer.Option(min=1, max=1_000_000, help="Orders in the backlog; repeat to drain several in turn."),
    ] = None,
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Distinct paying users per backlog.")] = 100,
    timeout: TimeoutOption = 600,
    one_process: OneProcessOption = False,
    as_json: JsonOption = False,
    report: ReportOption = None,
) -> None:
    """A backlog of orders appears at once (one transaction); time until every order is final.

    orders/s end to end through both databases and both topics, each stage's rate over time, and
    the CPU of every process per order. Repeat --orders to see whether the cost per order stays flat.

    Example: hsepay bench drain --orders 10000 --orders 100000 --report drain.html
    """
    settings = _settings()
    sizes = orders or [20_000]

    async def body():
        from hsepay.bench.drain import drain_backlogs
        from hsepay.bench.session import SagaSession

        async with SagaSession.open(settings, one_process=one_process) as session:
            return [await drain_backlogs(session, sizes=sizes, users=users, timeout=timeout)]

    _show(_run(body), as_json, report)


@app.command()
def latency(
    samples: Annotated[int, typer.Option(min=1, max=100_000, help="Orders timed.")] = 500,
    rate: Annotated[float, typer.Option(min=0.1, max=10_000, help="Orders per second, on a fixed schedule.")] = 50,
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Distinct users ordering.")] = 100,
    timeout: TimeoutOption = 30,
    watch: Annotated[
        Watch,
        typer.Option(
            help="How the final status is seen: http = the client polls GET /order/{id} (what a user sees); "
            "db = the bench asks the orders database every 1 ms (no load on the API)."
        ),
    ] = Watch.http,
    poll_every: Annotated[
        float, typer.Option(min=0.1, max=10_000, help="Milliseconds between a client's GETs (--watch http).")
    ] = 2.0,
    reads: Annotated[
        float,
        typer.Option(
            min=0, max=100_000, help="Also GET /order/{id} this many times a second in the background (open loop)."
        ),
    ] = 0.0,
    one_process: OneProcessOption = False,
    auth: AuthOption = False,
    as_json: JsonOption = False,
    report: ReportOption = None,
) -> None:
    """Orders over HTTP at a steady rate, each timed from its POST until a client polling
    GET /order/{id} every 2 ms sees its final status; the first order after the roles say ready is
    timed on its own.

    Example: hsepay bench latency --samples 500 --rate 50 --report latency.html
    Example: hsepay bench latency --one-process --reads 1000   # readers must not starve the saga
    """
    settings = _settings()

    async def body():
        from hsepay.bench.latency import latency as run_latency
        from hsepay.bench.session import SagaSession

        async with SagaSession.open(settings, one_process=one_process, auth=auth) as session:
            return [
                await run_latency(
                    session,
                    samples=samples,
                    rate=rate,
                    users=users,
                    timeout=timeout,
                    watch=watch.value,
                    poll_every=poll_every / 1000,
                    reads=reads,
                )
            ]

    _show(_run(body), as_json, report)


@app.command()
def http(
    connections: Annotated[int, typer.Option(min=1, max=10_000, help="Keep-alive connections in all.")] = 64,
    clients: Annotated[int, typer.Option(min=1, max=64, help="Client processes sharing the connections.")] = 2,
    duration: Annotated[float, typer.Option(min=0.1, help="Seconds measured.")] = 20,
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of load before measuring.")] = 3,
    users: Annotated[int, typer.Option(min=1, max=100_000, help="Distinct users ordering.")] = 1000,
    target: Annotated[
        str | None,
        typer.Option(help="Load this URL instead (e.g. another implementation of POST /orders); not audited."),
    ] = None,
    timeout: TimeoutOption = 120,
    api_only: Annotated[
        bool,
        typer.Option(
            "--api-only",
            help="POST /orders alone: the relays and consumers start after the load (then settle and are audited).",
        ),
    ] = False,
    read: Annotated[
        bool, typer.Option("--read", help="GET /order/{id} of orders placed beforehand instead of POST /orders.")
    ] = False,
    one_process: OneProcessOption = False,
    auth: AuthOption = False,
    as_json: JsonOption = False,
    report: ReportOption = None,
) -> None:
    """POST /orders at N connections from several client processes, the whole saga running behind.

    req/s, latency p50/p90/p99/max, statuses, transport errors, the client processes' CPU, and the
    CPU of every server process per request; then every accepted order must become final and the
    audit must hold. HSEPAY_RATE_LIMIT is 0 for the APIs (the whole load comes from one address).

    Example: hsepay bench http --connections 64 --clients 2 --duration 20 --report http.html
    Example: hsepay bench http --api-only      # POST /orders alone, workers stopped
    Example: hsepay bench http --read          # GET /order/{id}: CPU per read in the API
    """
    settings = _settings()
    if api_only and one_process:
        raise typer.BadParameter("hsepay up runs its workers with its APIs", param_hint="--api-only")

    async def body():
        import uuid

        from hsepay.bench.http import http as run_http
        from hsepay.bench.http import http_external
        from hsepay.bench.session import SagaSession

        if target is not None:
            people = [uuid.uuid4() for _ in range(users)]
            return [
                await http_external(
                    target, people, connections=connections, clients=clients, warmup=warmup, duration=duration
                )
            ]
        async with SagaSession.open(settings, one_process=one_process, auth=auth, apis_only=api_only) as session:
            return [
                await run_http(
                    session,
                    connections=connections,
                    clients=clients,
                    warmup=warmup,
                    duration=duration,
                    users=users,
                    settle_timeout=timeout,
                    read=read,
                )
            ]

    _show(_run(body), as_json, report)


@app.command()
def relay(
    rows: Annotated[int, typer.Option(min=1, max=10_000_000, help="Outbox rows to relay.")] = 100_000,
    cold: Annotated[
        bool,
        typer.Option("--cold", help="Fill the outbox first, then start the relay: its start-up is in the figure."),
    ] = False,
    timeout: TimeoutOption = 600,
    as_json: JsonOption = False,
    report: ReportOption = None,
) -> None:
    """The outbox relay alone: N rows appear at once before one idle `hsepay relay`; time until all
    are acknowledged and marked sent (events/s); then the topic is read back and checked. With
    --cold the rows are written with no relay running and the clock starts as it is spawned.

    Example: HSEPAY_RELAY_BATCH=2000 hsepay bench relay --rows 100000
    """
    settings = _settings()

    async def body():
        from hsepay.bench.relay import relay as run_relay

        return [await run_relay(settings, rows=rows, timeout=timeout, cold=cold)]

    _show(_run(body), as_json, report)
