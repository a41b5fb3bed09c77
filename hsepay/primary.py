"""Which primary each service database is on, for the logs: the server a role writes to, when it is
lost, and when it is back, said once each (not once per retry).

Every connection a process opens (its engines' pooled ones and a relay's lock session) reports
here through `hsepay.db`: a successful connect names the server libpq chose among the URL's hosts,
and a failure that means "no writable primary" (`hsepay.resilience.is_unavailable`) marks it lost.
During a failover libpq's own message names only the last host it tried ("port 5443 failed:
session is read-only"); these lines say what the role was using and what it uses now.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from hsepay.resilience import describe

__all__ = ["PrimaryWatch", "watch_of"]

log = logging.getLogger("hsepay.database")


@dataclass
class PrimaryWatch:
    """One database of one process: the primary in use, or since when there has been none."""

    name: str
    server: str | None = None
    lost_at: float | None = None
    lost_reason: str | None = None
    changes: int = 0
    """Times the primary changed or came back (a metric a test can wait on)."""
    since: float | None = None
    """When (time.monotonic) the current primary was first reached: a connection opened before
    that was opened to another server, or before an outage."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def connected(self, server: str) -> None:
        """A connection to `server` succeeded: say so if it is the first, a new one, or a return."""
        with self._lock:
            previous, lost_at = self.server, self.lost_at
            self.server, self.lost_at, self.lost_reason = server, None, None
            if previous is None or lost_at is not None or previous != server:
                self.since = time.monotonic()
            if previous is not None and (lost_at is not None or previous != server):
                self.changes += 1
        if lost_at is not None:
            log.warning(
                "%s database is back: primary %s after %.1fs without one%s",
                self.name,
                server,
                time.monotonic() - lost_at,
                f" (was {previous})" if previous and previous != server else "",
            )
        elif previous is None:
            # Debug only: a role's start line already names its server with what it promises
            # (hsepay.replication), and a one-shot command (`hsepay status`) says nothing on stderr.
            log.debug("%s database: using primary %s", self.name, server)
        elif previous != server:
            log.warning("%s database: primary is now %s (was %s)", self.name, server, previous)

    def lost(self, exc: BaseException, *, opened_at: float | None = None) -> None:
        """A connection failed in a way that means no writable primary: say so once per outage.

        A pooled connection `opened_at` before the current primary was reached is a leftover of the
        previous one (its server's goodbye read only now): its failure says nothing of the primary.
        """
        with self._lock:
            if self.lost_at is not None:
                return
            if opened_at is not None and self.since is not None and opened_at < self.since:
                return
            self.lost_at, self.lost_reason = time.monotonic(), describe(exc)
        log.warning("%s database: lost primary %s: %s", self.name, self.server or "(none yet)", self.lost_reason)

    @property
    def available(self) -> bool:
        return self.server is not None and self.lost_at is None


_watches: dict[str, PrimaryWatch] = {}
_watches_lock = threading.Lock()


def watch_of(name: str) -> PrimaryWatch:
    """The process-wide watch of the database called `name` (a service name): one per process, so
    that an engine and a relay's lock session of the same service speak as one."""
    with _watches_lock:
        if name not in _watches:
            _watches[name] = PrimaryWatch(name)
        return _watches[name]
