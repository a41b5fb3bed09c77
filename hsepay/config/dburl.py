"""Database URLs: whatever libpq accepts comes in, one canonical SQLAlchemy URL is kept, and every
connection (the engines' and the relays' own) is opened from the same libpq parameters.

libpq is the reference: a `postgresql://` URI (several hosts in its netloc, `?host=` lists, IPv6,
sockets, percent-encoding) or a `key=value` conninfo string is parsed by libpq itself
(`PQconninfoParse`, through psycopg), so hsepay accepts exactly what `psql` does. SQLAlchemy's own
spellings (`postgresql+psycopg://`, repeated `?host=h:p`) are read by SQLAlchemy's psycopg dialect,
which is also what turns the canonical URL back into libpq parameters: the relay's lock session and
the engines' pooled connections cannot disagree on where the database is.
"""

from __future__ import annotations

import re
from typing import Any

from psycopg import Error as PsycopgError
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy.dialects.postgresql.psycopg import PGDialectAsync_psycopg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["DatabaseUrlError", "canonical_db_url", "endpoints", "libpq_conninfo", "libpq_params", "redacted"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LIBPQ_SCHEMES = {"postgres", "postgresql"}
_SQLALCHEMY_SCHEME = "postgresql+psycopg"
_URL_KEYS = {"user", "password", "dbname", "host", "port"}
_DIALECT = PGDialectAsync_psycopg()


class DatabaseUrlError(ValueError):
    """The text is no PostgreSQL URL hsepay can use; the message says why (without the password)."""


def canonical_db_url(raw: str) -> str:
    """Any URL or conninfo string libpq accepts, as the canonical SQLAlchemy psycopg 3 URL.

    Raises DatabaseUrlError. One host stays in the netloc (`postgresql+psycopg://u:p@h:5432/db`);
    several hosts, or a socket directory, go to the query as libpq lists
    (`?host=h1,h2&port=5441,5442`), the one form both SQLAlchemy and libpq read alike.
    """
    return _canonical(_parse(raw.strip())).render_as_string(hide_password=False)


def _parse(raw: str) -> dict[str, str]:
    scheme = _SCHEME.match(raw)
    if scheme and scheme.group(1) not in _LIBPQ_SCHEMES | {_SQLALCHEMY_SCHEME}:
        raise DatabaseUrlError(
            f"scheme {scheme.group(1)!r} is not supported; hsepay runs on PostgreSQL only "
            "(postgresql://user:pass@host:port/dbname)"
        )
    try:
        if scheme and scheme.group(1) == _SQLALCHEMY_SCHEME:
            params = {k: str(v) for k, v in _DIALECT.create_connect_args(make_url(raw))[1].items()}
        else:
            if not scheme and "=" not in raw:
                raise PsycopgError("neither a URL nor key=value pairs")
            params = conninfo_to_dict(raw)
    except (PsycopgError, ArgumentError, ValueError):
        raise DatabaseUrlError(
            f"{redacted(raw)!r} is not a database URL (expected postgresql://user:pass@host:port/dbname, "
            "several hosts as host1:port1,host2:port2)"
        ) from None
    params = {key: str(value) for key, value in params.items() if value is not None and str(value) != ""}
    if not params.get("dbname"):
        raise DatabaseUrlError(f"{redacted(raw)!r} names no database (postgresql://host/dbname)")
    hosts = params.get("host", "").split(",")
    ports = params.get("port", "").split(",") if "port" in params else []
    for port in ports:
        if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
            raise DatabaseUrlError(f"port {port!r} is not a port number (1-65535)")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise DatabaseUrlError(f"{len(hosts)} host(s) but {len(ports)} ports: give one port, or one per host")
    return params


def _canonical(params: dict[str, str]) -> URL:
    host, port = params.get("host"), params.get("port")
    single = host is not None and "," not in host and not host.startswith("/") and (port is None or "," not in port)
    query = {key: value for key, value in params.items() if key not in _URL_KEYS}
    if host is not None and not single:
        query["host"] = host
        if port is not None:
            query["port"] = port
    return URL.create(
        _SQLALCHEMY_SCHEME,
        username=params.get("user"),
        password=params.get("password"),
        host=host if single else None,
        port=int(port) if single and port else None,
        database=params["dbname"],
        query=dict(sorted(query.items())),
    )


def libpq_params(url: str) -> dict[str, Any]:
    """The libpq connection parameters of a SQLAlchemy URL, as SQLAlchemy's psycopg dialect passes
    them to psycopg (every multi-host spelling it reads becomes libpq's `host=h1,h2 port=p1,p2`)."""
    return dict(_DIALECT.create_connect_args(make_url(url))[1])


def libpq_conninfo(url: str) -> str:
    """A libpq conninfo string (`key=value ...`) for psycopg, from a SQLAlchemy URL."""
    return make_conninfo("", **libpq_params(url))


def endpoints(url: str) -> list[str]:
    """The servers a URL names, as host:port (a socket directory as its path), for log lines."""
    params = libpq_params(url)
    hosts = str(params.get("host") or "local socket").split(",")
    ports = str(params.get("port") or "").split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    hosts = [f"[{host}]" if ":" in host else host for host in hosts]
    return [f"{host}:{port}" if port else host for host, port in zip(hosts, ports, strict=False)]


def redacted(raw: str) -> str:
    """A URL or conninfo string as it may appear in an error line: never with its password."""
    raw = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", raw)
