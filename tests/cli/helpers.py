"""Invoking the CLI in-process, shared by the CLI test modules."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from hsepay.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def ok(*args: str):
    result = invoke(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def ok_json(*args: str):
    return json.loads(ok(*args, "--json").stdout)
