"""How long anything may take on a database connection, in one place (hsepay.connections applies it).

- TCP keepalive (idle 1 s, 3 probes 1 s apart) and `tcp_user_timeout`, both ends (`dead_after`,
  4 s): a peer gone without a word (packets dropped, a host lost), even on an idle connection, or
  data never acknowledged: found within 5 s (the kernel's timers add ~0.6 s: with 5 s, 5.6-5.7 s
  was measured in tests/netfault/test_black_hole.py);
- `connect_timeout` (libpq, 2 s): a new connection that gets no answer: 2 s;
- `statement_timeout` (server, 3 s): a statement that runs too long: 3 s;
- the client's bound on one answer (`statement_timeout` + 1 s): a peer whose TCP is alive but which
  never answers (a proxy, a frozen server): 4 s;
- `lock_timeout` (server, 2 s): a statement queued behind a lock: 2 s;
- `idle_in_transaction_session_timeout` (server, 5 s): a session that holds locks and says nothing
  (its client frozen or cut off): 5 s.

The server-side ones are sent by the client as startup options (`-c name=value`), so they hold
against any server, whatever its configuration says. A connection pooler in transaction mode
(PgBouncer) refuses startup options unless told to ignore them (`ignore_startup_parameters`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["ANSWER_GRACE", "ConnectionPolicy"]

ANSWER_GRACE = 1.0
"""Seconds the client waits beyond the server's statement_timeout before it calls a silent
connection dead: the server's own timeout, with its clear error, always comes first."""


@dataclass(frozen=True)
class ConnectionPolicy:
    """How long anything may take on a database connection; see the module docstring."""

    connect_timeout: float = 2.0
    statement_timeout: float = 3.0
    """0: statements are not bounded (nor, then, the client's wait for their answers)."""
    lock_timeout: float = 2.0
    idle_in_transaction_timeout: float = 5.0
    dead_after: float = 4.0

    @property
    def answer_within(self) -> float | None:
        """The client's bound on one wait for the server (None: unbounded)."""
        return self.statement_timeout + ANSWER_GRACE if self.statement_timeout > 0 else None

    def keepalive(self) -> tuple[int, int, int]:
        """(idle, interval, count) in whole seconds: a silent peer is found dead within `dead_after`."""
        count = 3
        interval = max(1, int(self.dead_after / 5))
        idle = max(1, int(self.dead_after) - count * interval)
        return idle, interval, count

    def server_options(self) -> str:
        """`-c` options for the server: its timeouts, and keepalive for its side of the connection."""
        idle, interval, count = self.keepalive()
        gucs = {
            "statement_timeout": _ms(self.statement_timeout),
            "lock_timeout": _ms(self.lock_timeout),
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction_timeout),
            "tcp_keepalives_idle": idle,
            "tcp_keepalives_interval": interval,
            "tcp_keepalives_count": count,
            "tcp_user_timeout": _ms(self.dead_after),
        }
        return " ".join(f"-c {name}={value}" for name, value in gucs.items())

    def connect_kwargs(self, url_options: str | None = None) -> dict[str, Any]:
        """libpq connection parameters; options already in the URL come after ours, so they win."""
        idle, interval, count = self.keepalive()
        options = self.server_options() + (f" {url_options}" if url_options else "")
        return {
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),  # libpq's minimum is 2 s
            "keepalives": 1,
            "keepalives_idle": idle,
            "keepalives_interval": interval,
            "keepalives_count": count,
            "tcp_user_timeout": _ms(self.dead_after),
            "options": options,
        }


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))
