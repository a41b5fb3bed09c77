"""Embedded engines belong to their data directory: real brokers, real PostgreSQL, real processes.

Nothing here uses the default broker port: every broker listens on a port the test found free.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from hsepay import embedded
from tests.e2e.conftest import free_port

DEADLINE = 20.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.02)
    return result


def gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by its parent counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def env_for(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("HSEPAY_")}
    return {**env, "HSEPAY_DATA_DIR": str(data_dir)}


def hsepay(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hsepay.cli", *args],
        env=env_for(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )


def state_of(data_dir: Path) -> dict:
    return json.loads((data_dir / "broker.json").read_text())


@contextlib.contextmanager
def foreground_broker(data_dir: Path, port: int) -> Iterator[subprocess.Popen]:
    """`hsepay broker --port PORT` under data_dir, listening; stopped (if still running) at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hsepay.cli", "broker", "--port", str(port)],
        env=env_for(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Ready once it says so: it has started the broker and handles SIGTERM from then on.
        deadline = time.monotonic() + DEADLINE
        line = ""
        while "embedded broker on" not in line:
            assert proc.poll() is None, f"hsepay broker exited {proc.returncode}: {line}{proc.stdout.read()}"
            remaining = deadline - time.monotonic()
            assert remaining > 0, "hsepay broker did not start"
            if select.select([proc.stdout], [], [], remaining)[0]:
                line = proc.stdout.readline()
        assert embedded.find_broker(data_dir) == f"127.0.0.1:{port}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=DEADLINE)
        proc.stdout.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """An unrelated process whose pid stale state will name."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_a_foreign_broker_on_the_preferred_port_is_not_adopted_and_is_named(tmp_path, caplog):
    port = free_port()
    theirs, ours = tmp_path / "A", tmp_path / "B"
    with foreground_broker(theirs, port):
        their_pid = state_of(theirs)["pid"]

        refused = hsepay(ours, "broker", "--port", str(port))
        assert refused.returncode == 2
        line = refused.stderr.strip()
        assert f"port {port} on 127.0.0.1 is held by pid {their_pid}" in line
        assert f"the embedded broker of data directory {theirs.resolve()}" in line
        assert embedded.find_broker(ours) is None and not (ours / "broker.json").exists()

        caplog.set_level("WARNING", logger="hsepay.embedded")
        try:
            address = embedded.ensure_broker(ours, port=port)
            assert address != f"127.0.0.1:{port}"
            assert state_of(ours)["pid"] != their_pid
            assert embedded.find_broker(ours) == address
            assert embedded.find_broker(theirs) == f"127.0.0.1:{port}"  # theirs untouched
            [warning] = [r.getMessage() for r in caplog.records if r.name == "hsepay.embedded"]
            assert f"port {port} on 127.0.0.1 is held by pid {their_pid}" in warning
            assert f"listens on {address} instead" in warning
        finally:
            assert embedded.stop_broker(ours) is True
        assert embedded.find_broker(theirs) == f"127.0.0.1:{port}"  # `stop` of B left A's broker alone


def test_stale_state_is_neither_adopted_nor_signalled(tmp_path, sleeper, caplog):
    other = tmp_path / "other"
    other_address = embedded.ensure_broker(other, port=0)
    other_state = state_of(other)
    mine = tmp_path / "mine"
    mine.mkdir()
    caplog.set_level("WARNING", logger="hsepay.embedded")
    try:
        # `hsepay stop` with a state naming a pid that now runs another program, and the port where
        # another data directory's broker listens (an old-style state: pid and port only).
        (mine / "broker.json").write_text(json.dumps({"pid": sleeper.pid, "port": other_state["port"]}))
        assert embedded.find_broker(mine) is None
        stopped = hsepay(mine, "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "broker: not running" in stopped.stdout
        assert f"removing stale {mine / 'broker.json'}: its pid {sleeper.pid} now runs another program" in (
            stopped.stderr
        )
        assert not (mine / "broker.json").exists()

        # The same with a broker's full command line, and then the very state of the other data
        # directory's broker (same pid, command line and port; another working directory).
        for state in ({**other_state, "pid": sleeper.pid}, other_state):
            (mine / "broker.json").write_text(json.dumps(state))
            assert embedded.find_broker(mine) is None
            assert embedded.stop_broker(mine) is False
            assert not (mine / "broker.json").exists()
        assert sleeper.poll() is None  # never signalled
        assert embedded.find_broker(other) == other_address  # nor the other broker
        assert len([r for r in caplog.records if "removing stale" in r.getMessage()]) == 2

        (mine / "broker.json").write_text(json.dumps({"pid": sleeper.pid, "port": other_state["port"]}))
        address = embedded.ensure_broker(mine, port=other_state["port"])  # its own broker, on another port
        assert address != other_address
        assert state_of(mine)["pid"] not in (sleeper.pid, other_state["pid"])
        assert embedded.stop_broker(mine) is True
    finally:
        embedded.stop_broker(mine)
        embedded.stop_broker(other)
    assert sleeper.poll() is None


def test_sigkill_of_hsepay_broker_takes_its_tansu_along(tmp_path):
    port = free_port()
    with foreground_broker(tmp_path / "A", port) as command:
        tansu = state_of(tmp_path / "A")["pid"]
        assert psutil.Process(tansu).ppid() == command.pid
        command.kill()
        command.wait()
        wait_for(lambda: gone(tansu), f"Tansu pid {tansu} gone after SIGKILL of hsepay broker")
    assert embedded.find_broker(tmp_path / "A") is None
    # The port is free again for a broker of any data directory.
    with foreground_broker(tmp_path / "B", port):
        assert embedded.find_broker(tmp_path / "B") == f"127.0.0.1:{port}"


def test_sigterm_of_hsepay_broker_stops_it_cleanly(tmp_path):
    with foreground_broker(tmp_path, free_port()) as command:
        tansu = state_of(tmp_path)["pid"]
        command.send_signal(signal.SIGTERM)
        assert command.wait(timeout=DEADLINE) == 0
        assert gone(tansu)
    assert not (tmp_path / "broker.json").exists()


def test_the_detached_broker_of_a_killed_starter_is_recorded_and_adopted(tmp_path):
    script = (
        f"import pathlib\nfrom hsepay import embedded\nembedded.ensure_broker(pathlib.Path({str(tmp_path)!r}), port=0)"
    )
    starter = subprocess.Popen([sys.executable, "-c", script])
    try:
        wait_for(lambda: (tmp_path / "broker.json").exists() or starter.poll() is not None, "broker.json written")
        starter.kill()  # while it waits for the broker to listen, or just after
        starter.wait()
        recorded = state_of(tmp_path)["pid"]
        address = embedded.ensure_broker(tmp_path, port=0)
        assert state_of(tmp_path)["pid"] == recorded
        assert address == f"127.0.0.1:{state_of(tmp_path)['port']}"
    finally:
        assert embedded.stop_broker(tmp_path) is True
    assert gone(recorded)


def test_the_next_command_finds_the_same_broker_in_under_a_second(tmp_path):
    try:
        address = embedded.ensure_broker(tmp_path, port=0)
        pid = state_of(tmp_path)["pid"]
        second = subprocess.run(
            [
                sys.executable,
                "-c",
                "import pathlib, sys, time\n"
                "from hsepay import embedded\n"
                "started = time.monotonic()\n"
                f"address = embedded.ensure_broker(pathlib.Path({str(tmp_path)!r}))\n"
                "print(address, time.monotonic() - started)\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0, second.stderr
        found, elapsed = second.stdout.split()
        assert found == address
        assert float(elapsed) < 1.0
        assert state_of(tmp_path)["pid"] == pid
    finally:
        assert embedded.stop_broker(tmp_path) is True


def test_stale_postmaster_pid_is_neither_trusted_nor_signalled(tmp_path, sleeper):
    pidfile = tmp_path / "pg" / "postmaster.pid"
    try:
        uri = embedded.ensure_postgres(tmp_path)
        running = pidfile.read_text().splitlines()
        assert embedded.stop_postgres(tmp_path) is True
        wait_for(lambda: not pidfile.exists(), "postmaster.pid removed by the shutdown")

        # What a reboot (or a reused pid) leaves: the file of a server that is gone, naming a live pid.
        pidfile.write_text("\n".join([str(sleeper.pid), *running[1:]]) + "\n")
        assert embedded.stop_postgres(tmp_path) is False
        assert sleeper.poll() is None
        assert embedded.ensure_postgres(tmp_path) == uri
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        # SIGKILL of the postmaster: the next command starts it again instead of handing out its URI.
        postmaster = int(pidfile.read_text().splitlines()[0])
        os.kill(postmaster, signal.SIGKILL)
        wait_for(lambda: gone(postmaster), "postmaster gone after SIGKILL")
        assert embedded.ensure_postgres(tmp_path) == uri
        with psycopg.connect(uri) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        embedded.stop_postgres(tmp_path)
    assert sleeper.poll() is None
