"""Failure handling written once: what counts as an infrastructure fault, and how to wait and retry.

Relays, consumers, background loops, the CLI and the API error mapping all classify faults with
`is_unavailable` and retry with `Backoff`, so they agree on what "the database is down" means and
none of them sleeps through a stop signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable

import psycopg
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

__all__ = [
    "DATABASE_UNAVAILABLE",
    "Backoff",
    "OutcomeUnknown",
    "Overloaded",
    "Unavailable",
    "describe",
    "is_broker_fault",
    "is_read_only",
    "is_unavailable",
    "run_periodically",
    "sleep_or_stop",
    "supervise",
]

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """The database could not do the work in time; nothing of it was applied (an API answers 503)."""


class Overloaded(Unavailable):
    """Too much work already waits for the database: refused at once, before anything was tried."""


class OutcomeUnknown(Unavailable):
    """The commit was sent but never confirmed: the work may have been applied. Only a retry with the
    same Idempotency-Key can tell (it replays the stored answer if the first attempt committed)."""


DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    Unavailable,
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
    PoolTimeout,
)
"""Faults of the database connection (server down, restarting, network, every pooled connection
busy past HSEPAY_DB_POOL_TIMEOUT), not of the request."""

NO_WRITABLE_PRIMARY = {
    "25006": "read-only transaction",  # a standby, a demoted primary, default_transaction_read_only
    "57P01": "admin shutdown",  # a switchover or a fast stop ends every session
    "57P02": "crash shutdown",
    "57P03": "cannot connect now",  # starting up, in recovery, shutting down
}
"""SQLSTATEs of a server that is up but cannot take writes: during a failover the server at the
other end of a connection (through HAProxy, or pooled from before a switchover) is a standby or is
going away. They say nothing about the request, so they count as the database being unavailable:
503 from an API, a retry for a worker, and never an attempt against a message's quarantine."""


def _driver_error(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def is_read_only(exc: BaseException) -> bool:
    """The server answered, but is not (or no longer) a writable primary: its connections are of
    no use any more (the pool drops them, see `hsepay.db`)."""
    cause = _driver_error(exc)
    state = getattr(cause, "sqlstate", None)
    # 55000 is also raised for other unmet prerequisites; only "recovery is in progress" means a standby.
    return state in NO_WRITABLE_PRIMARY or (state == "55000" and "recovery" in str(cause).lower())


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be used right now: retry later (workers) or answer 503 (API), exit 2 (CLI)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, DATABASE_UNAVAILABLE) or is_read_only(exc)


def is_broker_fault(exc: BaseException) -> bool:
    """A KafkaError. aiokafka is not imported for this (commands that only read a database never
    load it, ~0.2 s): a process that has not loaded aiokafka cannot have raised one of its errors."""
    errors = sys.modules.get("aiokafka.errors")
    return errors is not None and isinstance(exc, errors.KafkaError)


def describe(exc: BaseException) -> str:
    """One line for logs and status panels: the driver's first line, not a traceback."""
    cause = _driver_error(exc)
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {first}" if first else repr(cause)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` or until `stop` is set; True if the sleep ran its course."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return not stop.is_set()


class Backoff:
    """Exponential backoff from `initial` to `cap` seconds; `reset()` after a success."""

    def __init__(self, cap: float = 10.0, initial: float = 0.1, factor: float = 2.0) -> None:
        self.initial = min(initial, cap)
        self.cap = cap
        self.factor = factor
        self.delay = self.initial

    def reset(self) -> None:
        self.delay = self.initial

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep the current delay (or until `stop`), then grow it; False if stopping."""
        delay = self.delay
        self.delay = min(self.delay * self.factor, self.cap)
        return await sleep_or_stop(stop, delay)


async def supervise(
    name: str,
    turn: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    backoff: Backoff,
    on_failure: Callable[[BaseException], None] = lambda exc: None,
) -> None:
    """Run `turn` until `stop` is set; a turn that raises is reported and run again after a backoff.

    A turn that returns normally resets the backoff (it did useful work before it ended). A bug
    raises like any fault: it is logged with its traceback, and the role keeps going.
    """
    while not stop.is_set():
        try:
            await turn()
            backoff.reset()
            continue
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            on_failure(exc)
            if is_unavailable(exc) or is_broker_fault(exc):
                log.warning("%s: %s; retrying in %.1fs", name, describe(exc), backoff.delay)
            else:
                log.exception("%s failed; retrying in %.1fs", name, backoff.delay)
        await backoff.wait(stop)


async def run_periodically(
    name: str,
    step: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    interval: float,
    backoff: Backoff,
) -> None:
    """Run `step` every `interval` seconds until `stop`; failures back off and are retried."""

    async def turn() -> None:
        while not stop.is_set():
            await step()
            backoff.reset()
            await sleep_or_stop(stop, interval)

    await supervise(name, turn, stop, backoff)
