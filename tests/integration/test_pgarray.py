"""hsepay.pgarray: every value comes back from PostgreSQL exactly as it went in, the awkward ones too."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from hsepay import pgarray

AWKWARD = ["", "plain", "NULL", "null", 'a "quoted" word', "back\\slash", "\\", '"', "{brace}", "a,b", " padded ",
           "tab\there", "new\nline", "é ✓ 中文", "}", "{", "'single'"]  # fmt: skip


def _values(pg_server: str, literal: str, cast: str) -> list:
    with psycopg.connect(pg_server, autocommit=True) as conn:
        return conn.execute(f"SELECT %s::{cast}", (literal,)).fetchone()[0]


def test_texts_come_back_exactly_and_none_is_null(pg_server):
    values = [*AWKWARD, None]
    assert _values(pg_server, pgarray.texts(values), "text[]") == values


def test_uuids_ints_and_bytes_come_back_exactly(pg_server):
    ids = [uuid.uuid4() for _ in range(5)]
    assert _values(pg_server, pgarray.uuids(ids), "uuid[]") == ids
    numbers = [0, -1, 2**63 - 1, -(2**63), 42]
    assert _values(pg_server, pgarray.ints(numbers), "bigint[]") == numbers
    blobs = [b"", b"\x00\x01\xff", b'{"json": "value"}', bytes(range(256))]
    assert _values(pg_server, pgarray.byteas(blobs), "bytea[]") == blobs
    assert _values(pg_server, pgarray.uuids([]), "uuid[]") == []


def test_a_nul_character_is_refused_by_postgresql(pg_server):
    with pytest.raises(psycopg.Error):
        _values(pg_server, pgarray.texts(["a\x00b"]), "text[]")
