"""`hsepay broker` and `hsepay stop`: the embedded engines."""

from __future__ import annotations

import signal
import subprocess
from typing import Annotated

import typer

from hsepay import embedded
from hsepay.commands.common import EXIT_USAGE, console, fail
from hsepay.config import ConfigError, get_settings


def broker(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Loopback port to listen on.")
    ] = embedded.BROKER_DEFAULT_PORT,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, in memory) in the foreground.

    Other hsepay commands find it through HSEPAY_DATA_DIR. Messages live in memory only: after a
    restart the outbox re-drive re-sends what orders still wait for. It never moves to another
    port: if the port is taken, it says by whom and exits 2. Ctrl-C, SIGTERM or even SIGKILL of
    this command stops the broker too (the last one on Linux).

    Example: hsepay broker --port 19092
    """
    try:
        settings = get_settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)  # SIGTERM stops it as cleanly as Ctrl-C
    try:
        try:
            proc = embedded.start_foreground_broker(settings.data_dir, port)
        except embedded.EmbeddedError as exc:
            raise fail(str(exc), EXIT_USAGE) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        console.print(f"embedded broker on 127.0.0.1:{port} (pid {proc.pid}); Ctrl-C stops it")
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGTERM)
            try:
                # Tansu drains its client connections first (5 s with one client, measured); it holds
                # nothing on disk, so one that is still there after the bound is killed.
                code = proc.wait(timeout=embedded.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        finally:
            embedded.forget_broker(settings.data_dir, proc.pid)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise fail(f"broker exited with code {code}", EXIT_USAGE)


def stop() -> None:
    """Stop the embedded PostgreSQL and broker started under HSEPAY_DATA_DIR (data is kept).

    Example: hsepay stop
    """
    try:
        settings = get_settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    stopped_broker = embedded.stop_broker(settings.data_dir)
    stopped_pg = embedded.stop_postgres(settings.data_dir)
    console.print(
        f"broker: {'stopped' if stopped_broker else 'not running'}; "
        f"postgres: {'stopped' if stopped_pg else 'not running'}"
    )
