"""Static group membership (Kafka's `group.instance.id`, KIP-345): a consumer killed and started again
takes its partitions back at once, instead of leaving them unread until the group drops the dead
member (the session timeout, 10 s, restarted by every rejoin: 20.1 s of stall after three kills in
CI) and rebalancing.

The id must be stable across restarts and unique among the group's live members: two live members
with one id fence each other. Given none (HSEPAY_CONSUMER_INSTANCE_ID), a consumer takes the lowest
free slot of its group on this host — `<group>@<host>#<slot>` — and holds the slot with an
advisory file lock for as long as it runs. The kernel drops the lock when the process dies, even by
kill -9, so the restarted process finds the same slot free and takes the same id back.

The cost: a static member does not leave its group when it stops, so a consumer stopped for good
leaves its partitions unread for the session timeout before the others take them over.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["InstanceSlot", "claim_instance_id"]

MAX_SLOTS = 1024


@dataclass
class InstanceSlot:
    """A claimed `group.instance.id`; `release()` frees its slot (the process's end does too)."""

    instance_id: str
    fd: int | None = None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops its lock
            self.fd = None


def _lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / "hsepay-consumer-slots"


def claim_instance_id(group_id: str, explicit: str | None = None, lock_dir: Path | None = None) -> InstanceSlot:
    """The instance id of one consumer of `group_id`: `explicit` if given, else a slot of this host."""
    if explicit:
        return InstanceSlot(explicit)
    directory = lock_dir or _lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    safe_group = re.sub(r"[^A-Za-z0-9._-]", "_", group_id)
    for slot in range(MAX_SLOTS):
        fd = os.open(directory / f"{safe_group}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return InstanceSlot(f"{group_id}@{host}#{slot}", fd)
    raise RuntimeError(f"more than {MAX_SLOTS} consumers of group {group_id!r} on this host")
