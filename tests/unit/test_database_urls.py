"""Database URLs: every spelling libpq accepts (several hosts included) becomes one canonical URL,
and every role derives the same libpq parameters from it; a read-only server counts as unavailable;
the primary watch says once when a primary is lost and when it is back (issue 22)."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest
from sqlalchemy.exc import InternalError, OperationalError

from hsepay.config import ConfigError, normalise_db_url
from hsepay.config.dburl import endpoints, libpq_params
from hsepay.db import conninfo
from hsepay.primary import PrimaryWatch
from hsepay.resilience import is_read_only, is_unavailable

THREE_HOSTS = {"host": "h,h,h", "port": "5441,5442,5443", "dbname": "payments", "user": "u"}


@pytest.mark.parametrize(
    "raw",
    [
        # the standard libpq multi-host URL (refused as "not a database URL" before issue 22)
        "postgresql://u@h:5441,h:5442,h:5443/payments?target_session_attrs=read-write",
        # libpq's query form
        "postgresql://u@/payments?host=h,h,h&port=5441,5442,5443&target_session_attrs=read-write",
        # SQLAlchemy's repeated form (the relay read it as one host named 'h:5443' before)
        "postgresql+psycopg://u@/payments?host=h:5441&host=h:5442&host=h:5443&target_session_attrs=read-write",
        # a libpq key=value conninfo string
        "host=h,h,h port=5441,5442,5443 dbname=payments user=u target_session_attrs=read-write",
    ],
)
def test_every_multi_host_spelling_gives_the_same_libpq_parameters(raw):
    url = normalise_db_url(raw, "HSEPAY_PAYMENTS_DB")
    assert url.startswith("postgresql+psycopg://")
    assert {k: str(v) for k, v in libpq_params(url).items()} == {**THREE_HOSTS, "target_session_attrs": "read-write"}
    assert endpoints(url) == ["h:5441", "h:5442", "h:5443"]
    assert normalise_db_url(url, "X") == url  # canonical: normalising again changes nothing


def test_a_single_host_url_keeps_its_usual_form():
    assert normalise_db_url("postgresql://u:p@db:5432/payments", "X") == "postgresql+psycopg://u:p@db:5432/payments"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("postgresql://u:p@[::1]:5432/db", {"host": "::1", "port": "5432"}),
        ("postgresql:///db?host=/var/run/postgresql", {"host": "/var/run/postgresql"}),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql/db", {"host": "/var/run/postgresql"}),
        ("host=/tmp/a,/tmp/b dbname=db", {"host": "/tmp/a,/tmp/b"}),
        ("postgresql://u@a,b:6000/db", {"host": "a,b", "port": ",6000"}),
    ],
)
def test_ipv6_sockets_and_partial_ports_survive(raw, expected):
    params = {k: str(v) for k, v in libpq_params(normalise_db_url(raw, "X")).items()}
    assert params["dbname"] == "db"
    for key, value in expected.items():
        assert params[key] == value


@pytest.mark.parametrize(
    "raw, complaint",
    [
        ("postgresql://u@h:5441,h:abc/db", "not a port number"),
        ("postgresql://u@h1,h2,h3/db?port=1,2", "3 host(s) but 2 ports"),
        ("postgresql://u:secret@h1,h2", "names no database"),
        ("host=h password=secret", "names no database"),
        ("postgresql://u@h:99999/db", "not a port number"),
    ],
)
def test_bad_multi_host_urls_name_the_variable_and_hide_the_password(raw, complaint):
    with pytest.raises(ConfigError) as caught:
        normalise_db_url(raw, "HSEPAY_ORDERS_DB")
    message = str(caught.value)
    assert message.startswith("HSEPAY_ORDERS_DB:") and complaint in message
    assert "secret" not in message


def test_connections_ask_for_a_writable_primary_unless_the_url_says_otherwise():
    plain = normalise_db_url("postgresql://u@h1:1,h2:2/db", "X")
    assert "target_session_attrs=read-write" in conninfo(plain, application_name="hsepay-orders")
    chosen = normalise_db_url("postgresql://u@h1:1,h2:2/db?target_session_attrs=any&connect_timeout=3", "X")
    info = conninfo(chosen, connect_timeout=10, application_name="hsepay-orders")
    assert "target_session_attrs=any" in info and "read-write" not in info
    assert "connect_timeout=3" in info and "connect_timeout=10" not in info  # the operator's value wins
    assert "application_name=hsepay-orders" in info


def _server_error(cls: type[psycopg.Error], message: str, wrapper=InternalError) -> Exception:
    return wrapper("SELECT 1", {}, cls(message))


@pytest.mark.parametrize(
    "error",
    [
        _server_error(psycopg.errors.ReadOnlySqlTransaction, "cannot execute INSERT in a read-only transaction"),
        _server_error(psycopg.errors.ReadOnlySqlTransaction, "cannot execute LISTEN during recovery"),
        _server_error(psycopg.errors.ObjectNotInPrerequisiteState, "recovery is in progress"),
        _server_error(
            psycopg.errors.AdminShutdown, "terminating connection due to administrator command", OperationalError
        ),
        _server_error(psycopg.errors.CannotConnectNow, "the database system is in recovery mode", OperationalError),
        psycopg.errors.ReadOnlySqlTransaction("cannot execute LISTEN during recovery"),  # the relay's own session
    ],
)
def test_a_read_only_or_recovering_server_is_unavailable(error):
    assert is_unavailable(error)
    assert is_read_only(error)


@pytest.mark.parametrize(
    "error",
    [
        _server_error(psycopg.errors.ObjectNotInPrerequisiteState, "lock is not available"),
        _server_error(psycopg.errors.UniqueViolation, "duplicate key"),
        ValueError("a bug"),
    ],
)
def test_request_errors_are_not_unavailability(error):
    assert not is_unavailable(error)


def test_the_watch_says_once_when_the_primary_is_lost_and_when_it_is_back(caplog):
    caplog.set_level(logging.DEBUG, logger="hsepay.database")
    watch = PrimaryWatch("orders")
    watch.connected("127.0.0.1:5441")
    watch.connected("127.0.0.1:5441")
    for _ in range(5):  # every retry of an outage
        watch.lost(OperationalError("SELECT 1", {}, psycopg.OperationalError("port 5443 failed: session is read-only")))
    assert not watch.available
    watch.connected("127.0.0.1:5442")
    watch.connected("127.0.0.1:5442")
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "orders database: using primary 127.0.0.1:5441"
    assert caplog.records[0].levelno == logging.DEBUG  # the role's start line names it already
    assert lines[1].startswith("orders database: lost primary 127.0.0.1:5441: OperationalError: port 5443 failed")
    assert lines[2].startswith("orders database is back: primary 127.0.0.1:5442 after ")
    assert lines[2].endswith("(was 127.0.0.1:5441)")
    assert len(lines) == 3
    assert watch.changes == 1 and watch.available


def test_a_leftover_pooled_connection_of_the_old_primary_is_not_a_new_outage(caplog):
    """After a failover, a connection pooled before it reads its server's goodbye only at its next
    use: the role has a primary, and the log must not say it lost it."""
    caplog.set_level(logging.INFO, logger="hsepay.database")
    watch = PrimaryWatch("payments")
    watch.connected("127.0.0.1:5441")
    before_the_failover = time.monotonic()
    watch.lost(OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection")))
    watch.connected("127.0.0.1:5442")
    watch.lost(psycopg.errors.AdminShutdown("terminating connection"), opened_at=before_the_failover)
    assert watch.available and watch.server == "127.0.0.1:5442"
    watch.lost(psycopg.errors.AdminShutdown("terminating connection"), opened_at=time.monotonic())
    assert not watch.available
    assert sum("lost primary" in record.getMessage() for record in caplog.records) == 2
