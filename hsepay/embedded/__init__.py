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

from hsepay.embedded.broker import (
    BROKER_DEFAULT_PORT,
    broker_command,
    ensure_broker,
    find_broker,
    forget_broker,
    start_foreground_broker,
    stop_broker,
)
from hsepay.embedded.common import STOP_TIMEOUT, BrokerRunning, EmbeddedError, PortInUse
from hsepay.embedded.postgres import ensure_databases, ensure_postgres, start_postgres_on_tcp, stop_postgres

__all__ = [
    "BROKER_DEFAULT_PORT",
    "STOP_TIMEOUT",
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
    "start_postgres_on_tcp",
    "stop_broker",
    "stop_postgres",
]
