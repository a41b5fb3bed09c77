"""PostgreSQL array literals for the batch statements' parameters (`unnest(%s::uuid[], …)`).

psycopg adapts a Python list element by element in Python (type detection, then each element's
dumper): measured on this box, 645 µs of client CPU for one statement with six arrays of 50 rows,
against 240 µs when each array is passed as the text of its literal, which psycopg sends as one
string and PostgreSQL's array input parses in C (server time unchanged, ~0.03 ms). The statements
keep their explicit casts (`::uuid[]`, `::text[]`, …), so PostgreSQL, not this module, decides
what an element means; every text element is quoted, so no value can be read as NULL, a bound or
a separator.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

__all__ = ["byteas", "ints", "texts", "uuids"]


def uuids(values: Iterable[uuid.UUID]) -> str:
    """`{…}` of uuids (their canonical text needs no quoting)."""
    return "{" + ",".join(map(str, values)) + "}"


def ints(values: Iterable[int]) -> str:
    """`{…}` of integers."""
    return "{" + ",".join(map(str, values)) + "}"


def _quoted(value: str) -> str:
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + value + '"'


def texts(values: Iterable[str | None]) -> str:
    """`{…}` of strings, each quoted (None is NULL). A NUL character is refused by PostgreSQL, as
    it is in any text value."""
    return "{" + ",".join("NULL" if value is None else _quoted(value) for value in values) + "}"


def byteas(values: Iterable[bytes]) -> str:
    """`{…}` of byte strings, each in bytea's hex form (quoted: it starts with a backslash)."""
    return "{" + ",".join('"\\\\x' + value.hex() + '"' for value in values) + "}"
