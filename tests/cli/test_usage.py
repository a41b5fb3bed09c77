"""Usage errors as the README promises them: one line on stderr, in hsepay's words, exit 2.

None of these reaches a database: each is refused while the command line is read.
"""

from __future__ import annotations

import pytest

from tests.cli.helpers import invoke

USER = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def one_line(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ")
    assert "Traceback" not in result.output and "╭" not in result.output  # no Rich box, no traceback
    assert "Input should be" not in line and "pydantic" not in line  # typer converts with pydantic: not its words
    return line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["nope"], "No such command 'nope'"),
        (["order", "list", "--limit", "many"], "'many' is not a whole number"),
        (["order", "list", "--limit", "0"], "must be at least 1"),
        (["order", "list", "--status", "paid"], "'paid' is not one of"),
        (["status", "--interval", "soon"], "'soon' is not a number"),
        (["token", "issue", USER, "--ttl", "1"], "must be at least 60"),
        (["account", "deposit", USER], "Missing argument"),
    ],
)
def test_usage_errors_are_one_line_in_our_words(args, words):
    line = one_line(invoke(*args))
    assert words in line
    assert "; see hsepay " in line and line.endswith(" --help")  # where to read more


@pytest.mark.parametrize("command", [["account", "deposit", USER], ["order", "create", USER]])
@pytest.mark.parametrize("amount", ["-5", "0", "1000000000001", "ten", "1.5", "-0.5"])
def test_an_amount_out_of_range_is_read_as_an_amount_and_refused(command, amount):
    """`-5` is a (negative) amount, not an unknown option: "No such option: -5" was click's answer."""
    line = one_line(invoke(*command, amount))
    assert "is not an amount" in line and "1 to 10^12" in line
    assert "No such option" not in line


def test_an_unknown_option_after_an_amount_is_still_refused():
    assert "--jsno" in one_line(invoke("account", "deposit", USER, "5", "--jsno"))


@pytest.mark.parametrize("service", ["billing", "gateway"])
def test_workers_name_only_the_services_they_take(service):
    """`relay billing` used to offer gateway, which `relay gateway` then refused."""
    for command in ("relay", "consume"):
        line = one_line(invoke(command, service))
        offered = line.split("one of " if service == "gateway" else "expected ")[-1]
        assert offered.startswith("payments, orders or all;")


def test_serve_all_is_a_usage_error_not_a_traceback():
    line = one_line(invoke("serve", "all"))
    assert "'all' is not one of payments, orders or gateway" in line


def test_inbox_retry_takes_one_service():
    assert "is not one of payments or orders" in one_line(invoke("inbox", "retry", "all"))


@pytest.mark.parametrize("value", ["3f", "xyz12345", "3fa85f64-5717-4562-b3fc-2c963f66afa6-00"])
def test_an_id_argument_is_an_id_or_at_least_four_of_its_hex_digits(value):
    assert "neither an id nor the start of one" in one_line(invoke("order", "show", value))


def test_help_without_a_command_is_help_not_an_error():
    result = invoke("account")
    assert "deposit" in result.stdout and not result.stderr.strip()


def test_a_malformed_database_url_is_reported_before_anything_starts_or_connects(monkeypatch, tmp_path):
    """The URL is read before an engine is built: nothing embedded starts (the data directory is never
    made) and the other service's unreachable server is never tried (its error would come first)."""
    from hsepay.config import get_settings
    from tests.e2e.conftest import free_port

    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", "garbage")
    monkeypatch.setenv("HSEPAY_ORDERS_DB", "postgresql://hsepay@127.0.0.1:1/orders")  # nothing listens on port 1
    monkeypatch.setenv("HSEPAY_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        ports = [f"--{name}-port={free_port()}" for name in ("payments", "orders", "gateway")]
        for args in (["account", "list"], ["order", "list"], ["status"], ["audit"], ["up", *ports]):
            line = one_line(invoke(*args))
            assert "HSEPAY_PAYMENTS_DB" in line and "not a database URL" in line, (args, line)
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "data").exists()


def test_every_command_of_the_contract_exists():
    """docs/DESIGN.md §7 names the commands (`hsepay account create … | deposit …`): each exists."""
    from pathlib import Path

    import typer

    from hsepay.cli import app

    design = (Path(__file__).parents[2] / "docs/DESIGN.md").read_text()
    block = design.split("## 7. CLI surface", 1)[1].split("```", 2)[1]
    root = typer.main.get_command(app)
    for line in block.splitlines():
        if not line.startswith("hsepay "):
            continue
        command, *alternatives = line.split("#")[0].removeprefix("hsepay ").split(" | ")
        name, *rest = command.split()
        if name == "broker":  # `hsepay broker | stop`: two commands
            assert {"broker", *(a.strip() for a in alternatives)} <= root.commands.keys()
            continue
        assert name in root.commands, line
        group = root.commands[name]
        if hasattr(group, "commands") and rest:
            wanted = {rest[0], *(alternative.split()[0] for alternative in alternatives)}
            wanted = {word for word in wanted if not word.startswith("[")}  # an option, not a command
            assert wanted <= group.commands.keys(), (line, wanted)
