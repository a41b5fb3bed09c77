"""The CLI's part of issue 13: tokens, the auth choice of `serve` and `up`, operator output that data
cannot style or escape from, and status commands that fail when they cannot see what they report on."""

from __future__ import annotations

import json
import stat
import uuid

import pytest
from rich.console import Console

from hsepay.auth import TokenVerifier
from hsepay.commands.token import announce_auth
from hsepay.config import get_settings
from tests.cli.helpers import invoke, ok, ok_json
from tests.cli.test_cli import assert_one_line_error
from tests.tokens import PREVIOUS_SECRET, SECRET

ESCAPE = "\x1b[31mred\x1b[0m"
MARKUP = "[bold]loud[/bold] [link=http://evil.example]x[/link]"


@pytest.fixture(autouse=True)
def environment(monkeypatch, db_urls, tmp_path):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", db_urls["payments"])
    monkeypatch.setenv("HSEPAY_ORDERS_DB", db_urls["orders"])
    monkeypatch.setenv("HSEPAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HSEPAY_AUTH_SECRET", raising=False)
    monkeypatch.setenv("COLUMNS", "300")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def with_secret(monkeypatch, value: str) -> None:
    monkeypatch.setenv("HSEPAY_AUTH_SECRET", value)
    get_settings.cache_clear()


# --- hsepay token issue -------------------------------------------------------------------------------


def test_token_issue_prints_a_user_token_that_verifies(monkeypatch):
    with_secret(monkeypatch, f"{SECRET},{PREVIOUS_SECRET}")
    user = uuid.uuid4()
    token = ok("token", "issue", str(user)).stdout.strip()
    assert len(token.splitlines()) == 1
    principal = TokenVerifier([SECRET]).verify(token)  # signed with the first (current) secret
    assert (principal.subject, principal.role) == (user, "user")


def test_token_issue_operator_json(monkeypatch):
    with_secret(monkeypatch, SECRET)
    user = uuid.uuid4()
    issued = ok_json("token", "issue", str(user).upper(), "--operator", "--ttl", "600")
    assert (issued["sub"], issued["role"]) == (str(user), "operator")
    assert TokenVerifier([SECRET]).verify(issued["token"]).role == "operator"
    assert issued["expires_at"].endswith("+00:00")


@pytest.mark.parametrize(
    "args",
    [["nope"], [f"urn:uuid:{uuid.uuid4()}"], [str(uuid.uuid4()), "--ttl", "0"], [str(uuid.uuid4()), "--ttl", "x"]],
)
def test_token_issue_bad_arguments_are_usage_errors(monkeypatch, args):
    with_secret(monkeypatch, SECRET)
    assert invoke("token", "issue", *args).exit_code == 2


def test_token_issue_without_a_secret_exits_2_with_one_line():
    assert_one_line_error(invoke("token", "issue", str(uuid.uuid4())), 2, "HSEPAY_AUTH_SECRET")


def test_token_issue_with_a_weak_secret_exits_2_without_showing_it(monkeypatch):
    with_secret(monkeypatch, "hunter2")
    line = assert_one_line_error(invoke("token", "issue", str(uuid.uuid4())), 2, "HSEPAY_AUTH_SECRET", "32")
    assert "hunter2" not in line


# --- serve and up: auth on, or off only when said -------------------------------------------------------


def test_serve_without_a_secret_refuses_to_start():
    assert_one_line_error(invoke("serve", "payments"), 2, "HSEPAY_AUTH_SECRET", "--insecure-no-auth")


def test_serve_with_a_secret_and_insecure_flag_is_a_contradiction(monkeypatch):
    with_secret(monkeypatch, SECRET)
    assert_one_line_error(invoke("serve", "orders", "--insecure-no-auth"), 2, "--insecure-no-auth")


def test_up_banner_when_auth_is_off_and_operator_token_in_a_private_file_when_on(tmp_path):
    console = Console(record=True, width=120)
    announce_auth(console, (), tmp_path)
    assert "AUTHENTICATION IS OFF" in console.export_text()
    assert not (tmp_path / "operator-token").exists()

    console = Console(record=True, width=4000)
    announce_auth(console, (SECRET,), tmp_path)
    shown = console.export_text()
    path = tmp_path / "operator-token"
    token = path.read_text().strip()
    assert TokenVerifier([SECRET]).verify(token).role == "operator"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in shown and token not in shown and "eyJ" not in shown  # never in a redirected log


def test_token_issue_refuses_a_lifetime_the_apis_would_refuse(monkeypatch):
    with_secret(monkeypatch, SECRET)
    monkeypatch.setenv("HSEPAY_AUTH_MAX_TTL", "3600")
    get_settings.cache_clear()
    assert_one_line_error(invoke("token", "issue", str(uuid.uuid4()), "--ttl", "7200"), 2, "HSEPAY_AUTH_MAX_TTL")
    assert ok("token", "issue", str(uuid.uuid4()), "--ttl", "3600").stdout.startswith("eyJ")


# --- operator output: data never styles the terminal --------------------------------------------------


def test_order_show_and_list_escape_control_characters_and_markup():
    user = str(uuid.uuid4())
    order = ok_json("order", "create", user, "7", "--description", f"{ESCAPE} {MARKUP}")
    for output in (ok("order", "show", order["id"]).stdout, ok("order", "list", "--user", user).stdout):
        assert "\x1b" not in output
        assert "\\x1b[31mred\\x1b[0m" in output  # shown, as text
        assert "[bold]loud[/bold]" in output  # markup printed literally, not applied
    shown = json.loads(ok("order", "show", order["id"], "--json").stdout)
    assert shown["description"] == f"{ESCAPE} {MARKUP}"  # --json keeps the data as it is (JSON escapes it)


def test_error_lines_escape_what_the_user_typed():
    result = invoke("order", "show", "\x1b[31m[bold]x")
    assert result.exit_code == 2
    assert "\x1b[31m" not in result.output


# --- status commands fail when they cannot see ---------------------------------------------------------


@pytest.mark.parametrize("command", [["outbox", "status"], ["inbox", "status"]])
def test_status_exits_2_when_the_database_is_unreachable(monkeypatch, command):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", "postgresql://u:p@127.0.0.1:1/db")
    get_settings.cache_clear()
    assert_one_line_error(invoke(*command, "payments"), 2, "HSEPAY_PAYMENTS_DB")


@pytest.mark.parametrize("command", [["outbox", "status"], ["inbox", "status"]])
def test_status_exits_2_when_the_broker_is_unreachable(monkeypatch, command):
    monkeypatch.setenv("HSEPAY_KAFKA", "127.0.0.1:1")
    get_settings.cache_clear()
    result = invoke(*command, "payments", "--json")
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["payments"]["broker_error"]
