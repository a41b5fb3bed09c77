"""The layer rules of docs/ARCHITECTURE.md, checked on every `pytest`: no import cycle anywhere in
hsepay/, and the import-linter contracts of pyproject.toml (layers top to bottom, payments and
orders independent, relay/ generic). Imports inside functions and under TYPE_CHECKING count: a lazy
import hides a dependency from Python, not from a reader."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

from hsepay import migrate

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hsepay"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every hsepay module `module` imports, wherever the import statement stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in known:  # `from hsepay.x import name`: the module is hsepay.x
                name = name.rpartition(".")[0]
            if name and name != module and name.split(".")[0] == "hsepay":
                targets.add(name)
    return targets


def test_no_import_cycle_in_hsepay():
    known = _modules()
    graph = {module: _imports(module, path, known) for module, path in known.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]  # listed as "is imported by"; said as "imports"
        pytest.fail("import cycle: " + " -> ".join(reversed(cycle)))


def test_the_cycle_check_sees_lazy_and_type_checking_imports(tmp_path):
    """The check above is only as good as `_imports`: it must see imports inside functions and
    under TYPE_CHECKING (where the cycles of issue 20 hid)."""
    source = tmp_path / "hsepay" / "a.py"
    source.parent.mkdir()
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from hsepay.b import B\n"
        "def f():\n    from hsepay import c\n    from .d import thing\n"
    )
    known = {f"hsepay.{name}": source for name in "abcd"}
    assert _imports("hsepay.a", source, known) == {"hsepay.b", "hsepay.c", "hsepay.d"}


def test_the_import_linter_contracts_hold():
    """`lint-imports` as a developer runs it, with this interpreter (the contracts are in pyproject.toml)."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]
        + ["--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("service", sorted(migrate.HEADS))
def test_the_recorded_schema_head_is_the_newest_migration(service):
    """migrate.HEADS spares every command that checks a schema the import of Alembic; a migration
    added without updating it would make every such command refuse a current database."""
    assert migrate.head_revision(service) == migrate.scripted_head(service)
