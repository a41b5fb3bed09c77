"""`hsepay up`: the whole system in one process, one command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select

from hsepay import migrate
from hsepay.bootstrap import Runtime, resolve_kafka, service_tables
from hsepay.commands.common import EXIT_USAGE, console, fail, run, runtime
from hsepay.relay.inbox_consumer import INFRASTRUCTURE_ERRORS
from hsepay.runner import Workers, api_server, run_until_stopped, start_workers

log = logging.getLogger("hsepay")


def _check_port(host: str, port: int, option: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise fail(
                f"{host}:{port} is not available ({exc.strerror}); choose another with {option}", EXIT_USAGE
            ) from None


async def _pending(rt: Runtime, service: str) -> int | None:
    outbox, _ = service_tables(service)
    try:
        async with rt.engine(service).connect() as conn:
            return (
                await conn.execute(select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None)))
            ).scalar_one()
    except INFRASTRUCTURE_ERRORS:
        return None


async def _status_table(rt: Runtime, workers: Workers, urls: dict[str, str], broker: str) -> Table:
    table = Table(title=f"hsepay up — broker {broker} — Ctrl-C stops", title_justify="left")
    for column in ("service", "API", "outbox pending", "relay", "processed", "duplicates", "quarantined", "errors"):
        table.add_column(column)
    for service in migrate.SERVICES:
        relay, consumer = workers.relays[service], workers.consumers[service]
        pending = await _pending(rt, service)
        table.add_row(
            service,
            urls[service],
            "?" if pending is None else str(pending),
            "active" if relay.stats.active else "standby",
            str(consumer.stats.processed),
            str(consumer.stats.duplicates),
            str(consumer.stats.quarantined),
            str(relay.stats.errors + consumer.stats.errors),
        )
    return table


def up(
    host: Annotated[str, typer.Option(help="Interface the APIs bind to.")] = "127.0.0.1",
    payments_port: Annotated[int, typer.Option(min=1, max=65535, help="Payments API port.")] = 8080,
    orders_port: Annotated[int, typer.Option(min=1, max=65535, help="Orders API port.")] = 8081,
    status: Annotated[bool, typer.Option(help="Show a live status panel (on a terminal).")] = True,
) -> None:
    """Run everything: embedded engines (unless URLs are set), migrations, both APIs, relays and consumers.

    Example: hsepay up   # then: curl -X POST localhost:8080/accounts -d '{"user_id": "..."}'
    """
    _check_port(host, payments_port, "--payments-port")
    _check_port(host, orders_port, "--orders-port")
    rt = runtime()

    async def body() -> None:
        try:
            for service in migrate.SERVICES:
                await rt.check_database(service)
                await asyncio.to_thread(migrate.upgrade, service, rt.db_urls[service])
            broker, _ = resolve_kafka(rt.settings)
            urls = {"payments": f"http://{host}:{payments_port}", "orders": f"http://{host}:{orders_port}"}
            servers = [api_server(rt, "payments", host, payments_port), api_server(rt, "orders", host, orders_port)]
            async with start_workers(rt, migrate.SERVICES) as workers:
                serving = [asyncio.create_task(server.serve()) for server in servers]
                for service, url in urls.items():
                    console.print(f"{service} API: {url}  (docs {url}/schema/swagger)")
                waiting = asyncio.create_task(run_until_stopped(workers.stop))
                live = (
                    Live(await _status_table(rt, workers, urls, broker), console=console, refresh_per_second=2)
                    if status and console.is_terminal
                    else contextlib.nullcontext()
                )
                with live:
                    while not waiting.done() and not any(task.done() for task in serving):
                        await asyncio.wait([waiting, *serving], timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                        if isinstance(live, Live):
                            live.update(await _status_table(rt, workers, urls, broker))
                console.print("stopping: draining workers and APIs…")
                for server in servers:
                    server.should_exit = True
                workers.stop.set()
                await asyncio.gather(*serving, return_exceptions=True)
                waiting.cancel()
            console.print("stopped")
        finally:
            await rt.dispose()

    run(body)
