"""hsepay's roles as real processes (`hsepay serve|relay|consume`), which a chaos run kills and restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Role", "RoleSet"]


@dataclass
class Role:
    """One `hsepay ...` process; `restart()` starts it again with the same arguments."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    _log: object = field(default=None, repr=False)

    def start(self) -> None:
        self.starts += 1
        self._log = open(self.log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hsepay.cli", *self.args],
            # The caller's environment without its HSEPAY_* settings: only the run's own apply.
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("HSEPAY_")},
                **self.env,
                "PYTHONUNBUFFERED": "1",
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, and the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        code: int | None
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                code = None
        else:
            code = self.proc.returncode
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None

    def output(self) -> str:
        path = self.log_dir / f"{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class RoleSet:
    roles: dict[str, Role] = field(default_factory=dict)

    def add(self, role: Role) -> Role:
        self.roles[role.name] = role
        return role

    def start_all(self) -> None:
        for role in self.roles.values():
            role.start()

    def stop_all(self) -> dict[str, int | None]:
        return {name: role.stop() for name, role in self.roles.items()}

    def dead(self) -> list[str]:
        return [name for name, role in self.roles.items() if not role.alive()]

    async def wait_ready(self, urls: Mapping[str, str], timeout: float) -> None:
        """Until each role named in `urls` answers 200 on `<its url>/health/ready` (its API or its
        --metrics-port). RuntimeError, with the end of its log, if one exits meanwhile; TimeoutError
        naming those not ready after `timeout` seconds."""
        import httpx

        deadline = time.monotonic() + timeout
        pending = dict(urls)
        async with httpx.AsyncClient(timeout=2.0) as client:
            while pending:
                for name, url in list(pending.items()):
                    role = self.roles[name]
                    if not role.alive():
                        code = role.proc.returncode if role.proc else None
                        raise RuntimeError(f"{name} exited with {code}: {_tail(role.output())}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{url}/health/ready")).status_code == 200:
                            del pending[name]
                if not pending:
                    return
                if time.monotonic() > deadline:
                    where = self.roles[next(iter(pending))].log_dir
                    raise TimeoutError(f"{', '.join(pending)} not ready within {timeout:g}s (logs in {where})")
                await asyncio.sleep(0.05)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"


def wait_for(check, timeout: float, what: str, interval: float = 0.1):
    """Poll a synchronous `check` until truthy; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:g}s")
        time.sleep(interval)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
