"""Database plumbing shared by both services: engines, connections, metadata conventions.

Every connection hsepay opens goes through `connect()`: the engines' pooled connections (as
SQLAlchemy's `async_creator`) and a relay's lock session alike. So each role reaches the database
the URL names in exactly the same way (any URL libpq accepts, several hosts included), asks libpq
for a writable primary unless the URL says otherwise, and reports the server it got, or lost, to
the process's `PrimaryWatch`.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo as _make_conninfo
from sqlalchemy import MetaData, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from hsepay.config.dburl import libpq_conninfo, libpq_params
from hsepay.connection_policy import ConnectionPolicy
from hsepay.connections import WatchedConnection
from hsepay.primary import PrimaryWatch, watch_of
from hsepay.resilience import is_read_only, is_unavailable

__all__ = [
    "ConnectionPolicy",
    "conninfo",
    "connect",
    "create_engine",
    "libpq_conninfo",
    "new_metadata",
    "server_of",
    "session_defaults",
]

# Stable constraint names, so Alembic's autogenerate and the migrations agree.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def server_of(conn: psycopg.AsyncConnection) -> str:
    """host:port of the server a connection reached (the host libpq chose among the URL's)."""
    host = conn.info.host
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{conn.info.port}"


def session_defaults(url: str) -> dict[str, str]:
    """The libpq parameters hsepay adds to every connection unless the URL sets them itself: a
    read-write session (every role writes; with several hosts libpq then skips standbys)."""
    return {} if "target_session_attrs" in libpq_params(url) else {"target_session_attrs": "read-write"}


def conninfo(url: str, **params: Any) -> str:
    """The libpq conninfo of `url` (a SQLAlchemy URL) with hsepay's session defaults and `params`.

    What the URL itself says about a parameter wins over hsepay's default for it (an operator's
    `?connect_timeout=3`), except the application name, which tells the roles apart in
    pg_stat_activity.
    """
    given = libpq_params(url)
    chosen = {key: value for key, value in params.items() if key == "application_name" or key not in given}
    return _make_conninfo(libpq_conninfo(url), **session_defaults(url), **chosen)


async def connect(
    url: str,
    *,
    watch: str | None = None,
    autocommit: bool = False,
    policy: ConnectionPolicy | None = None,
    **params: Any,
) -> psycopg.AsyncConnection:
    """A psycopg connection to the database of `url`, as `conninfo()` describes it.

    `watch` names the database in the logs: the server reached, or the failure that means no
    writable primary, goes to that process-wide `PrimaryWatch` (see `hsepay.primary`). With a
    `policy` (hsepay.connection_policy) the connection carries its keepalive, `tcp_user_timeout`
    and server-side timeouts, and is a `WatchedConnection` whose every wait for an answer is bounded.
    """
    answer_within = None
    if policy is not None:
        url_options = libpq_params(url).get("options")
        bounds = policy.connect_kwargs(url_options)
        params = {"connect_timeout": bounds.pop("connect_timeout"), **params, **bounds}
        answer_within = policy.answer_within
    info = conninfo(url, **params)
    if policy is not None:  # the URL's own options come after ours in `bounds`, so both hold
        info = _make_conninfo(info, options=params["options"])
    try:
        if policy is not None:
            conn = await WatchedConnection.connect(info, autocommit=autocommit, answer_within=answer_within)
        else:
            conn = await psycopg.AsyncConnection.connect(info, autocommit=autocommit)
    except Exception as exc:
        if watch and is_unavailable(exc):
            watch_of(watch).lost(exc)
        raise
    if watch:
        watch_of(watch).connected(server_of(conn))
    return conn


OPENED_AT = "hsepay_opened_at"
"""Key of a pooled connection's `info`: when (time.monotonic) it was opened."""


def _note_opening(dbapi_connection: Any, record: Any) -> None:
    record.info[OPENED_AT] = time.monotonic()


def _drop_read_only_connections(watch: PrimaryWatch):
    def handle_error(context: ExceptionContext) -> None:
        exc = context.original_exception
        if is_read_only(exc):
            # A standby or a server shutting down: this connection (and, since a failover moves
            # them all, the rest of the pool) will never write again; the next checkout reconnects.
            context.is_disconnect = True
        if is_unavailable(exc) or context.is_disconnect:
            watch.lost(exc, opened_at=_opened_at(context))

    return handle_error


def _opened_at(context: ExceptionContext) -> float | None:
    """When the connection that failed was opened (None: a failed connect, or unknown). Read from
    the pool's record without touching `Connection.connection`, which would try to revalidate."""
    pooled = getattr(context.connection, "_dbapi_connection", None)
    try:
        return pooled.info.get(OPENED_AT) if pooled is not None else None
    except Exception:  # an invalidated record has no info any more
        return None


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    pool_timeout: float = 5.0,
    application_name: str = "hsepay",
    policy: ConnectionPolicy | None = None,
) -> AsyncEngine:
    """An async engine on psycopg 3; `url` is already normalised by the config.

    The pool is bounded (`pool_size` plus as many overflow connections): a request that finds it
    exhausted waits `pool_timeout` seconds, then fails with a pool TimeoutError that the API answers
    503, rather than queueing for SQLAlchemy's default 30 s. Connections come from `connect()`
    (`connect_args` are its libpq parameters); the watch is named after the application name
    without its `hsepay-` prefix (the service). Every connection follows `policy` (hsepay.connections):
    keepalive, server-side timeouts, and a bound on every wait for an answer.
    """
    policy = policy or ConnectionPolicy()
    connect_args = {"application_name": application_name}
    watch = application_name.removeprefix("hsepay-")
    engine = create_async_engine(
        url,
        async_creator=lambda: connect(url, watch=watch, policy=policy, **connect_args),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        # No pre-ping: it costs a round trip per checkout on the hot path; a dropped connection
        # fails its statement instead, which every caller already retries or reports as 503.
        pool_pre_ping=False,
    )
    event.listen(engine.sync_engine, "connect", _note_opening)
    event.listen(engine.sync_engine, "handle_error", _drop_read_only_connections(watch_of(watch)))
    return engine
