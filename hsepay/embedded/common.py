"""What both embedded engines share: errors, timeouts, file locks."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("hsepay.embedded")

BROKER_DEFAULT_PORT = 19092
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.02


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
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
