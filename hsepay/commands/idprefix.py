"""Short ids, as git and docker print them: tables show the first 8 hex digits of an id, more where
8 would name several, and every command that takes an id also takes any unique start of one.

A prefix is looked up as a range of the id's index (`id BETWEEN prefix000… AND prefixfff…`), so it
costs an index probe, not a scan. At least MIN_PREFIX hex digits are required, as git does: a deposit
must not land on an account named by one character. A prefix that names no id is "not found" (exit 1,
like an unknown full id); one that names several is a usage error (exit 2) that says how to be precise.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer

from hsepay.ids import parse_uuid

if TYPE_CHECKING:  # SQLAlchemy is imported by the functions that query, not by `hsepay --help`
    from sqlalchemy import ColumnElement
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["MIN_PREFIX", "SHORT", "IdRef", "id_argument", "resolve", "shorten"]

SHORT = 8
MIN_PREFIX = 4
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class IdRef:
    """An id as typed on the command line: a whole id, or the start of one."""

    text: str
    full: uuid.UUID | None = None

    @property
    def digits(self) -> str:
        return self.full.hex if self.full is not None else self.text.replace("-", "").lower()


def id_argument(value: str) -> IdRef:
    """Typer parser: a whole id (the API's rule, hsepay.ids) or at least MIN_PREFIX of its hex digits."""
    full = parse_uuid(value)
    if full is not None:
        return IdRef(value, full)
    digits = value.replace("-", "").lower()
    if len(digits) < MIN_PREFIX or len(digits) > 32 or not _HEX.fullmatch(digits):
        raise typer.BadParameter(
            f"{value[:64]!r} is neither an id nor the start of one (at least {MIN_PREFIX} of its hex digits)"
        )
    return IdRef(value)


def bounds(digits: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The smallest and largest ids that start with these hex digits (uuid order is byte order)."""
    return uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


async def resolve(
    conn: AsyncConnection,
    column: ColumnElement,
    ref: IdRef,
    *,
    what: str,
    not_found: Callable[[str], Exception],
    where: ColumnElement | None = None,
) -> uuid.UUID:
    """The one id of `column` that `ref` names; `not_found(message)` is raised when none does."""
    if ref.full is not None:
        return ref.full
    from sqlalchemy import select

    low, high = bounds(ref.digits)
    query = select(column).where(column.between(low, high)).limit(1)
    if where is not None:
        query = query.where(where)
    # The first and the last id of the range, two index probes (PostgreSQL has no min(uuid) before 18).
    first = (await conn.execute(query.order_by(column))).scalar()
    last = (await conn.execute(query.order_by(column.desc()))).scalar()
    if first is None:
        raise not_found(f"no {what} id starts with {ref.text}")
    if first != last:
        raise typer.BadParameter(
            f"{ref.text} is ambiguous: several {what} ids start with it; give more digits (--wide shows whole ids)"
        )
    return first


async def shorten(
    conn: AsyncConnection, column: ColumnElement, ids: Iterable[uuid.UUID], *, where: ColumnElement | None = None
) -> dict[uuid.UUID, str]:
    """Each id's shortest display (SHORT hex digits, 4 more at a time) that names it alone in `column`."""
    from sqlalchemy import or_, select

    pending = set(ids)
    shown: dict[uuid.UUID, str] = {}
    length = SHORT
    while pending and length < 32:
        ranges = {value: bounds(value.hex[:length]) for value in pending}
        query = select(column).distinct().where(or_(*(column.between(low, high) for low, high in ranges.values())))
        if where is not None:
            query = query.where(where)
        present = list((await conn.execute(query)).scalars())
        for value, (low, high) in ranges.items():
            if sum(1 for other in present if low <= other <= high) <= 1:
                shown[value] = value.hex[:length]
        pending -= shown.keys()
        length += 4
    shown.update({value: str(value) for value in pending})
    return shown
