"""The `hsepay` command through Typer's CliRunner, on the test databases.

CLI commands call asyncio.run themselves, so these tests are plain functions. They do not truncate
tables; each test works on fresh user ids instead.
"""

from __future__ import annotations

import uuid

import pytest
import typer
from sqlalchemy.engine import make_url

from hsepay import migrate
from hsepay.cli import app
from hsepay.config import get_settings
from tests.cli.helpers import invoke, ok, ok_json
from tests.conftest import SERVICES

CONTRACT_COMMANDS = [  # DESIGN §7, as far as this foundation builds it
    "db upgrade",
    "serve",
    "account create",
    "account deposit",
    "account balance",
    "account list",
    "order create",
    "order show",
    "order list",
]


def leaf_commands(group, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every runnable command under `group`, so that a command added later is covered too."""
    found = []
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):  # a group (Typer ships its own click)
            found += leaf_commands(command, (*prefix, name))
        else:
            found.append(" ".join((*prefix, name)))
    return found


COMMANDS = leaf_commands(typer.main.get_command(app))


@pytest.fixture(autouse=True)
def environment(monkeypatch, db_urls, tmp_path):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", db_urls["payments"])
    monkeypatch.setenv("HSEPAY_ORDERS_DB", db_urls["orders"])
    monkeypatch.setenv("HSEPAY_DATA_DIR", str(tmp_path / "data"))  # never start an embedded server here
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def new_user() -> str:
    return str(uuid.uuid4())


# --- account ------------------------------------------------------------------------------------


def test_account_create_then_duplicate_exits_1_with_one_line():
    user = new_user()
    result = ok("account", "create", user)
    assert user in result.stdout
    assert_one_line_error(invoke("account", "create", user), 1, user)


def test_account_create_json():
    user = new_user()
    assert ok_json("account", "create", user) == {"message": "Account created", "user_id": user, "balance": 0}


def test_deposit_and_balance_json():
    user = new_user()
    ok("account", "create", user)
    refilled = ok_json("account", "deposit", user, "700")
    assert refilled == {"message": "Balance refilled", "user_id": user, "balance": 700}
    ok("account", "deposit", user, "300")
    assert ok_json("account", "balance", user) == {"user_id": user, "balance": 1000}


def test_balance_human_output():
    user = new_user()
    ok("account", "create", user)
    ok("account", "deposit", user, "42")
    assert f"{user}: balance 42" in ok("account", "balance", user).stdout


@pytest.mark.parametrize("amount", ["0", "-5", "1000000000001", "ten", "1.5"])
def test_deposit_bad_amount_is_usage_error(amount):
    user = new_user()
    ok("account", "create", user)
    result = invoke("account", "deposit", "--", user, amount)  # "--": "-5" is a value, not an option
    assert result.exit_code == 2, result.output
    assert ok_json("account", "balance", user)["balance"] == 0


def test_deposit_to_unknown_user_exits_1():
    user = new_user()
    assert_one_line_error(invoke("account", "deposit", user, "10"), 1, user)


def test_balance_of_unknown_user_exits_1():
    assert_one_line_error(invoke("account", "balance", new_user()), 1)


def test_account_list_json_includes_new_accounts():
    users = [new_user(), new_user()]
    for user in users:
        ok("account", "create", user)
    ok("account", "deposit", users[1], "5")
    listed = {a["user_id"]: a for a in ok_json("account", "list", "--limit", "10000")}
    assert listed[users[0]]["balance"] == 0
    assert listed[users[1]]["balance"] == 5
    assert {"user_id", "balance", "created_at", "updated_at"} <= listed[users[0]].keys()


def test_account_list_table():
    user = new_user()
    ok("account", "create", user)
    assert "Accounts" in ok("account", "list", "--limit", "10000").stdout


@pytest.mark.parametrize(
    "args",
    [
        ["account", "create", "not-a-uuid"],
        ["account", "deposit", "not-a-uuid", "10"],
        ["account", "balance", "123"],
        ["order", "create", "nope", "10"],
        ["order", "show", "3fa85f64-5717-4562-b3fc-zz"],
        ["order", "list", "--user", "nope"],
    ],
)
def test_malformed_uuid_is_usage_error(args):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


# --- order --------------------------------------------------------------------------------------


def test_order_create_show_json():
    user = new_user()
    created = ok_json("order", "create", user, "250", "--description", "coffee")
    assert created["user_id"] == user
    assert (created["amount"], created["description"], created["status"], created["reason"]) == (
        250,
        "coffee",
        "created",
        None,
    )
    shown = ok_json("order", "show", created["id"])
    assert shown == created


def test_order_show_table():
    user = new_user()
    order_id = ok_json("order", "create", user, "9")["id"]
    output = ok("order", "show", order_id).stdout
    assert order_id in output
    assert user in output


def test_order_show_unknown_exits_1():
    order_id = new_user()
    assert_one_line_error(invoke("order", "show", order_id), 1, order_id)


def test_order_list_filters_by_user_and_status():
    user, other = new_user(), new_user()
    ids = [ok_json("order", "create", user, str(amount))["id"] for amount in (1, 2, 3)]
    ok("order", "create", other, "4")
    mine = ok_json("order", "list", "--user", user)
    assert [o["id"] for o in mine] == ids[::-1]
    assert ok_json("order", "list", "--user", user, "--status", "created") == mine
    assert ok_json("order", "list", "--user", user, "--status", "failed") == []
    assert [o["id"] for o in ok_json("order", "list", "--user", user, "--limit", "2")] == ids[:0:-1]


def test_order_list_rejects_unknown_status():
    assert invoke("order", "list", "--status", "paid").exit_code == 2


@pytest.mark.parametrize("amount", ["0", "1000000000001"])
def test_order_create_bad_amount_is_usage_error(amount):
    user = new_user()
    assert invoke("order", "create", user, amount).exit_code == 2
    assert ok_json("order", "list", "--user", user) == []


def test_order_create_description_too_long_is_usage_error():
    user = new_user()
    assert invoke("order", "create", user, "5", "--description", "x" * 1001).exit_code == 2
    assert ok_json("order", "list", "--user", user) == []


# --- configuration errors ----------------------------------------------------------------------


def test_unsupported_database_scheme_exits_2_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", "mysql://x/y")
    get_settings.cache_clear()
    assert_one_line_error(invoke("account", "balance", new_user()), 2, "HSEPAY_PAYMENTS_DB")


def test_unreachable_database_exits_2_naming_the_variable(monkeypatch):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", "postgresql://u:p@127.0.0.1:1/db")
    get_settings.cache_clear()
    line = assert_one_line_error(invoke("account", "create", new_user()), 2, "HSEPAY_PAYMENTS_DB", "127.0.0.1:1")
    assert ":p@" not in line  # the password stays out of the message


def test_unreachable_database_on_db_upgrade_exits_2(monkeypatch):
    monkeypatch.setenv("HSEPAY_ORDERS_DB", "postgresql://u:p@127.0.0.1:1/db")
    get_settings.cache_clear()
    assert_one_line_error(invoke("db", "upgrade", "orders"), 2, "HSEPAY_ORDERS_DB")


def test_bad_kafka_setting_exits_2(monkeypatch):
    monkeypatch.setenv("HSEPAY_KAFKA", "no-port")
    get_settings.cache_clear()
    assert_one_line_error(invoke("account", "list"), 2, "HSEPAY_KAFKA")


def test_same_database_for_both_services_exits_2(monkeypatch, db_urls):
    monkeypatch.setenv("HSEPAY_ORDERS_DB", db_urls["payments"])
    get_settings.cache_clear()
    assert_one_line_error(invoke("order", "list"), 2, "HSEPAY_PAYMENTS_DB", "HSEPAY_ORDERS_DB")


def _respelled(url: str) -> str:
    """The same database under another spelling: a connection parameter that changes nothing of
    where it is (a host name libpq ignores in favour of ?host= is the same canonical URL since the
    URLs are parsed by libpq, and so already caught by comparing them)."""
    return make_url(url).update_query_dict({"connect_timeout": "7"}).render_as_string(hide_password=False)


def test_one_database_under_two_spellings_is_refused_before_anything_is_migrated(monkeypatch, db_urls):
    monkeypatch.setenv("HSEPAY_ORDERS_DB", _respelled(db_urls["payments"]))
    get_settings.cache_clear()
    message = assert_one_line_error(invoke("db", "upgrade", "all"), 2, "HSEPAY_PAYMENTS_DB", "HSEPAY_ORDERS_DB")
    assert "reach the same database" in message


def test_a_service_pointed_at_another_services_database_says_so(monkeypatch, db_urls):
    monkeypatch.setenv("HSEPAY_ORDERS_DB", _respelled(db_urls["payments"]))
    get_settings.cache_clear()
    message = assert_one_line_error(invoke("order", "list"), 2, "HSEPAY_ORDERS_DB")
    assert "already holds the payments schema" in message
    assert_one_line_error(invoke("db", "upgrade", "orders"), 2, "HSEPAY_ORDERS_DB", "already holds the payments schema")


def test_missing_database_exits_2(monkeypatch, db_urls):
    missing = make_url(db_urls["payments"]).set(database=f"hsepay_missing_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", missing.render_as_string(hide_password=False))
    get_settings.cache_clear()
    assert_one_line_error(invoke("account", "list"), 2, "HSEPAY_PAYMENTS_DB", missing.database)


def test_unmigrated_database_exits_2_and_says_how_to_fix(monkeypatch, empty_database):
    monkeypatch.setenv("HSEPAY_ORDERS_DB", empty_database)
    get_settings.cache_clear()
    assert_one_line_error(invoke("order", "list"), 2, "HSEPAY_ORDERS_DB", "hsepay db upgrade orders")


def test_serve_with_bad_setting_exits_2_before_serving(monkeypatch):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", "mysql://x/y")
    get_settings.cache_clear()
    assert_one_line_error(invoke("serve", "payments"), 2, "HSEPAY_PAYMENTS_DB")


# --- db, help -----------------------------------------------------------------------------------


def test_db_upgrade_all_json():
    revisions = ok_json("db", "upgrade", "all")
    assert revisions == {service: migrate.head_revision(service) for service in SERVICES}
    assert all(revisions.values())


def test_db_upgrade_unknown_service_is_usage_error():
    assert invoke("db", "upgrade", "ledger").exit_code == 2


def test_the_contract_commands_exist():
    assert set(CONTRACT_COMMANDS) <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = ok(*command.split(), "--help")
    assert "Example" in result.stdout
    assert f"hsepay {command}" in result.stdout


@pytest.mark.parametrize("group", ["db", "account", "order", "outbox", "inbox"])
def test_every_command_group_has_help_with_an_example(group):
    result = ok(group, "--help")
    assert "Example" in result.stdout
    assert f"hsepay {group}" in result.stdout
