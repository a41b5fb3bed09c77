"""What a service's database promises about an acknowledged write if its primary fails over.

Read from the primary itself: `synchronous_commit`, `synchronous_standby_names` and
`pg_stat_replication` (each standby's `sync_state`). Three answers matter for money:

- synchronous: a commit (an order answered 202, a deposit answered 200) waits until a synchronous
  standby has it, so promoting that standby loses nothing (Patroni's synchronous_mode promotes only
  such a standby);
- asynchronous: standbys stream but none is waited for; a failover onto one loses the commits it had
  not received. Issue 22 measured it: a replica 3 s behind, 47 orders answered 202 and 3 deposits
  answered 200 lost, and the money audit passed (both databases lost the same tail);
- none: no standby; nothing to fail over to (the promise is this server's disk).

Every role says which at start (a warning when an acknowledged write can be lost), and so does
`hsepay status`. docs/OPERATIONS.md says what hsepay requires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Promise", "Standby", "read_promise"]

WAITING_COMMITS = ("on", "remote_apply", "remote_write")
"""synchronous_commit levels at which a commit waits for the synchronous standbys."""


@dataclass(frozen=True)
class Standby:
    name: str
    state: str | None
    sync_state: str | None
    """sync, quorum, potential or async; None when the role may not see it (grant pg_monitor)."""
    lag_bytes: int | None


@dataclass(frozen=True)
class Promise:
    server: str
    in_recovery: bool
    synchronous_commit: str
    synchronous_standby_names: str
    standbys: list[Standby] = field(default_factory=list)

    @property
    def synchronous(self) -> list[Standby]:
        return [s for s in self.standbys if s.sync_state in ("sync", "quorum")]

    @property
    def hidden(self) -> bool:
        """pg_stat_replication rows without their states: the role lacks pg_monitor (or superuser)."""
        return any(s.sync_state is None for s in self.standbys)

    @property
    def kind(self) -> str:
        if self.in_recovery:
            return "standby"
        if self.hidden and self.synchronous_standby_names and self.synchronous_commit in WAITING_COMMITS:
            return "unknown"
        if self.synchronous and self.synchronous_commit in WAITING_COMMITS:
            return "synchronous"
        if self.standbys:
            return "asynchronous"
        return "none"

    @property
    def can_lose_acknowledged_writes(self) -> bool:
        """A failover (or, with synchronous_commit off, a crash) may lose writes already answered."""
        return self.kind in ("asynchronous", "unknown", "standby") or self.synchronous_commit == "off"

    def describe(self, name: str) -> str:
        """One line for the logs and the status table."""
        lead = f"{name} database at {self.server}"
        streaming = ", ".join(f"{s.name} ({s.sync_state or '?'})" for s in self.standbys)
        commit = f"synchronous_commit={self.synchronous_commit}"
        if self.kind == "standby":
            return f"{lead} is a standby in recovery: hsepay needs the primary (its URL or its proxy is wrong)"
        if self.kind == "unknown":
            return (
                f"{lead}: {len(self.standbys)} standby(s) whose replication state this role may not read "
                f"(GRANT pg_monitor TO it): whether an acknowledged write survives a failover is unknown"
            )
        if self.kind == "synchronous":
            line = f"{lead}: primary with synchronous standby(s) {streaming}, {commit}"
            if self.synchronous_commit == "remote_write":
                return line + ": a failover loses nothing acknowledged unless the standby's OS crashes too"
            return line + ": a failover to a synchronous standby loses nothing acknowledged"
        if self.kind == "asynchronous":
            why = (
                f"{commit} waits for no standby"
                if self.synchronous_commit not in WAITING_COMMITS
                else f"synchronous_standby_names={self.synchronous_standby_names or '(empty)'}"
            )
            return (
                f"{lead}: primary with asynchronous standby(s) only, {streaming} ({why}): "
                "A FAILOVER CAN LOSE ORDERS AND DEPOSITS ALREADY ACKNOWLEDGED (issue 22: 47 orders and 3 deposits "
                "lost with a replica 3 s behind). Use synchronous replication (docs/OPERATIONS.md)"
            )
        waiting = (
            f"; synchronous_standby_names={self.synchronous_standby_names} but no standby connected: "
            "commits wait until one is"
            if self.synchronous_standby_names and self.synchronous_commit in WAITING_COMMITS
            else ""
        )
        durability = (
            "a crash loses the last commits (synchronous_commit=off)"
            if self.synchronous_commit == "off"
            else ("no failover possible; acknowledged writes are as safe as this server's disk")
        )
        return f"{lead}: primary without standbys ({commit}{waiting}): {durability}"

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "kind": self.kind,
            "can_lose_acknowledged_writes": self.can_lose_acknowledged_writes,
            "synchronous_commit": self.synchronous_commit,
            "synchronous_standby_names": self.synchronous_standby_names,
            "standbys": [
                {"name": s.name, "state": s.state, "sync_state": s.sync_state, "lag_bytes": s.lag_bytes}
                for s in self.standbys
            ],
        }


async def read_promise(conn: AsyncConnection) -> Promise:
    """Ask the server a connection reached what it promises (read-only, a few catalog reads)."""
    row = (
        await conn.execute(
            text(
                "SELECT pg_is_in_recovery() AS recovering, current_setting('synchronous_commit') AS commit, "
                "current_setting('synchronous_standby_names') AS names, "
                "coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local socket') AS server"
            )
        )
    ).one()
    standbys: list[Standby] = []
    if not row.recovering:
        standbys = [
            Standby(r.application_name, r.state, r.sync_state, None if r.lag is None else int(r.lag))
            for r in await conn.execute(
                text(
                    "SELECT application_name, state, sync_state, "
                    "pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn) AS lag FROM pg_stat_replication "
                    "WHERE state IS DISTINCT FROM 'backup' ORDER BY application_name"
                )
            )
        ]
    return Promise(row.server, row.recovering, row.commit, row.names, standbys)
