"""Which process is which: the checks behind adopting or signalling only our own engines."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from hsepay.embedded.common import POLL_INTERVAL


def process(pid: object) -> psutil.Process | None:
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


def wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait until proc has exited (a zombie counts as exited); True if it did within timeout."""
    deadline = time.monotonic() + timeout
    while process(proc.pid) is not None and same_process(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def same_process(proc: psutil.Process) -> bool:
    try:
        return proc.is_running()  # compares the creation time: False once the pid is reused
    except psutil.Error:
        return False


def working_dir_of(proc: psutil.Process) -> str | None:
    with contextlib.suppress(psutil.Error):
        return proc.cwd()
    return None


def command_line_of(proc: psutil.Process) -> list[str] | None:
    with contextlib.suppress(psutil.Error):
        return proc.cmdline()
    return None


def describe_process(proc: psutil.Process) -> str:
    """`pid 1234 (sleep 60)`; for an hsepay broker, whose data directory it belongs to."""
    return f"pid {proc.pid}{what_process(proc)}"


def what_process(proc: psutil.Process) -> str:
    cmdline = command_line_of(proc)
    if cmdline is None:
        return " (not visible to this user)"
    cwd = working_dir_of(proc)
    if looks_like_tansu(cmdline) and cwd and (Path(cwd) / "broker.json").exists():
        return f", the embedded broker of data directory {cwd}"
    text = " ".join([Path(cmdline[0]).name, *cmdline[1:]]) if cmdline else proc.name()
    return f" ({text[:77] + '...' if len(text) > 80 else text})"


def listens_on(proc: psutil.Process, port: int) -> bool:
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


def port_holder(port: int) -> str:
    """Who listens on loopback `port`, as far as this user can see."""
    try:
        pids = {
            conn.pid
            for conn in psutil.net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        }
    except psutil.Error:  # macOS without root, for one
        pids = {None}
    described = [describe_process(proc) for pid in sorted(p for p in pids if p) if (proc := process(pid))]
    if described:
        return "held by " + ", ".join(described)
    return "held by a process this user cannot see" if pids else "in use"


def looks_like_tansu(cmdline: Sequence[str]) -> bool:
    return bool(cmdline) and "tansu" in Path(cmdline[0]).name.lower() and "broker" in cmdline[1:2]
