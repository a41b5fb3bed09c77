"""What `hsepay` loads before it does its work, counted in a fresh interpreter (not timed: the times
are in the issue's notes). `--help` loads no database driver; the commands that only read a
database load neither the tools (bench, chaos), nor a web framework or server, nor Kafka, nor
Alembic. A module-level import that pulls one of them back onto the start-up path fails here."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

TOOLS_AND_SERVERS = {"hsepay.bench", "hsepay.chaos.run", "litestar", "uvicorn", "granian", "httpx", "prometheus_client"}
KAFKA_AND_MIGRATIONS = {"aiokafka", "alembic", "hsepay.bootstrap.broker", "hsepay.bootstrap.workers"}
DATABASE = {"sqlalchemy", "psycopg"}

_REPORT = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nLOADED ' + ' '.join(sorted(sys.modules)) + '\\n'))\n"
    "sys.argv = ['hsepay', *sys.argv[1:]]\n"
    "from hsepay.cli import main\n"
    "main()\n"
)


def _loaded(args: list[str], env: dict[str, str]) -> tuple[int, set[str]]:
    result = subprocess.run(
        [sys.executable, "-c", _REPORT, *args], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in result.stderr.splitlines() if line.startswith("LOADED ")]
    assert lines, result.stderr
    return result.returncode, set(lines[-1].split()[1:])


def _among(loaded: set[str], packages: set[str]) -> set[str]:
    return {name for name in loaded if any(name == p or name.startswith(p + ".") for p in packages)}


def test_help_loads_no_database_driver_tool_server_kafka_or_alembic(tmp_path):
    env = {**os.environ, "HSEPAY_DATA_DIR": str(tmp_path)}
    code, loaded = _loaded(["--help"], env)
    assert code == 0
    assert not _among(loaded, TOOLS_AND_SERVERS | KAFKA_AND_MIGRATIONS | DATABASE)


@pytest.mark.parametrize(
    "args",
    [
        ["account", "list"],
        ["account", "balance", str(uuid.uuid4())],
        ["order", "list"],
        ["order", "show", str(uuid.uuid4())],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_command_that_reads_a_database_loads_no_tool_server_kafka_or_alembic(args, db_urls, tmp_path):
    env = {
        **os.environ,
        "HSEPAY_PAYMENTS_DB": db_urls["payments"],
        "HSEPAY_ORDERS_DB": db_urls["orders"],
        "HSEPAY_DATA_DIR": str(tmp_path),
    }
    code, loaded = _loaded(args, env)
    assert code in (0, 1)  # 1: the unknown account or order, said in one line
    assert "sqlalchemy" in loaded  # it did read the database
    assert not _among(loaded, TOOLS_AND_SERVERS | KAFKA_AND_MIGRATIONS)
