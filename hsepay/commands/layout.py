"""Tables that fit the terminal: nothing an operator copies (an id, a URL, a count) is cut or split.

A view gives its columns and rows once. At its natural width it is one row per item; when that does not
fit the terminal (measured by Rich, not guessed from a threshold), the same cells are laid out
transposed: one row per column, one column per item. Cells that may wrap (free text, error messages)
are folded; the others never wrap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table

__all__ = ["Column", "fit", "table", "transposed"]


@dataclass(frozen=True)
class Column:
    """A column: its header, and whether its cells may wrap (free text) or must stay whole."""

    header: str
    wraps: bool = False
    justify: str = "left"
    width: int | None = None
    """A fixed width for a column that wraps: Rich shrinking two wrapping columns at once cropped text."""


def _columns(columns: Sequence[Column | str]) -> list[Column]:
    return [c if isinstance(c, Column) else Column(c) for c in columns]


def table(title: str | None, columns: Sequence[Column | str], rows: Iterable[Sequence[RenderableType]]) -> Table:
    """One row per item; cells that must stay whole never wrap, free text folds."""
    grid = Table(title=title, title_justify="left", **_STYLE)
    for column in _columns(columns):
        grid.add_column(
            column.header,
            no_wrap=not column.wraps,
            overflow="fold",
            justify=column.justify,  # type: ignore[arg-type]
            width=column.width,
        )
    for row in rows:
        grid.add_row(*row)
    return grid


def transposed(title: str | None, columns: Sequence[Column | str], rows: Sequence[Sequence[RenderableType]]) -> Table:
    """One row per column, one column per item, the first cell of each item as its header."""
    columns = _columns(columns)
    grid = Table(title=title, title_justify="left", **_STYLE)
    grid.add_column("", no_wrap=True, style="bold")
    for row in rows:
        grid.add_column(row[0], overflow="fold")  # type: ignore[arg-type]
    for index, column in enumerate(columns[1:], start=1):
        grid.add_row(column.header, *(row[index] for row in rows))
    return grid


# A rule under the headers and two spaces between columns, no frame: 80 columns hold more data.
# (pad_edge=False with this one-sided padding made Rich crop wrapped text by a column: rich 15.)
_STYLE: dict = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": True, "padding": (0, 1, 0, 0)}
UNBOUNDED = 10_000
WRAPPED_MIN = 12
"""Columns a free-text cell keeps at least before its table is laid out otherwise."""


def fits(console: Console, renderable: RenderableType, width: int) -> bool:
    """Whether `renderable` fits in `width` columns without wrapping a cell."""
    return natural_width(console, renderable) <= width


def _probe(columns: Sequence[Column], rows: Sequence[Sequence[RenderableType]]) -> Table:
    """The table with free text cut to WRAPPED_MIN: what must fit for the wide layout to be readable."""
    cut = [
        [
            cell[:WRAPPED_MIN] if column.wraps and isinstance(cell, str) else cell
            for column, cell in zip(columns, row, strict=True)
        ]
        for row in rows
    ]
    return table(None, columns, cut)


def natural_width(console: Console, renderable: RenderableType) -> int:
    """The width `renderable` takes when nothing in it wraps."""
    unbounded = console.options.update(width=UNBOUNDED, max_width=UNBOUNDED)
    return Measurement.get(console, unbounded, renderable).maximum


def fit(
    console: Console,
    title: str | None,
    columns: Sequence[Column | str],
    rows: Sequence[Sequence[RenderableType]],
    width: int | None = None,
) -> Table:
    """The one-row-per-item table if it fits `width` (default: the console's), else the transposed one."""
    width = console.width if width is None else width
    columns = _columns(columns)
    if not rows or fits(console, _probe(columns, rows), width):
        return table(title, columns, rows)
    return transposed(title, columns, rows)
