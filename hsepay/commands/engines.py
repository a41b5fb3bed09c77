"""`hsepay broker` and `hsepay stop`: the embedded engines."""

from __future__ import annotations

import json
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
    restart the outbox re-drive re-sends what orders still wait for.

    Example: hsepay broker --port 19092
    """
    try:
        settings = get_settings()
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if found := embedded.find_broker(settings.data_dir):
        raise fail(f"an embedded broker already runs at {found} (hsepay stop ends it)", EXIT_USAGE)
    try:
        command = embedded.broker_command(port)
    except embedded.EmbeddedError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(command)
    state = settings.data_dir / "broker.json"
    state.write_text(json.dumps({"pid": proc.pid, "port": port}))
    console.print(f"embedded broker on 127.0.0.1:{port} (pid {proc.pid}); Ctrl-C stops it")
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait()
    finally:
        state.unlink(missing_ok=True)
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise fail(f"broker exited with code {code} (is port {port} in use?)", EXIT_USAGE)


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
