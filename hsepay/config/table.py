"""The README's configuration table, generated from the settings themselves (`python -m hsepay.config.table`),
so that a default is shown as an operator writes it (`unset`, `off`), never as a Python repr (`()`, `False`)."""

from __future__ import annotations

from html import escape
from typing import Any

from hsepay.config import Settings

__all__ = ["markdown_table", "shown"]


def shown(default: Any) -> str:
    """A default as the environment spells it."""
    if default is None or default == ():
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, tuple):
        return ",".join(str(item) for item in default)
    return str(default)


def markdown_table() -> str:
    """| variable | meaning | default |, one row per setting, in declaration order."""
    rows = ["| variable | meaning | default |", "| --- | --- | --- |"]
    rows += [
        f"| `{variable}` | {escape(doc, quote=False)} | {escape(shown(default), quote=False)} |"
        for variable, default, doc in Settings.documented()
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
