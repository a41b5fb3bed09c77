"""Short ids, as git and docker print them: tables at 80 columns show whole short ids, and every id
they print is accepted back, as is any unique start of an id (at least 4 hex digits)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from hsepay.config import get_settings
from tests.cli.helpers import invoke, ok, ok_json


@pytest.fixture(autouse=True)
def environment(monkeypatch, db_urls, tmp_path):
    monkeypatch.setenv("HSEPAY_PAYMENTS_DB", db_urls["payments"])
    monkeypatch.setenv("HSEPAY_ORDERS_DB", db_urls["orders"])
    monkeypatch.setenv("HSEPAY_DATA_DIR", str(tmp_path / "data"))  # never start an embedded server here
    monkeypatch.setenv("COLUMNS", "80")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def rows(table: str) -> list[list[str]]:
    """The data rows of a printed table (the lines under its rule), split into cells."""
    lines = table.splitlines()
    assert all(len(line) <= 80 for line in lines), table
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    return [line.split() for line in lines[rule + 1 :] if line[:1].strip()]


def test_order_list_at_80_columns_prints_short_ids_that_order_show_accepts_back():
    user = str(uuid.uuid4())
    ok("account", "create", user)
    ok("account", "deposit", user, "100")
    created = {ok_json("order", "create", user, str(n), "--description", "x" * 60)["id"] for n in (1, 2, 3)}

    listed = rows(ok("order", "list", "--user", user).stdout)
    assert len(listed) == 3
    for row in listed:
        short, user_shown = row[0], row[1]
        assert len(short) == 8 and user.replace("-", "").startswith(user_shown)
        assert ok_json("order", "show", short)["id"] in created
    assert {r[0] for r in listed} == {i.replace("-", "")[:8] for i in created}

    wide = ok("order", "list", "--user", user[:8], "--wide").stdout  # a start of the user id, whole ids out
    assert created <= {row[0] for row in rows_any_width(wide)}


def rows_any_width(table: str) -> list[list[str]]:
    lines = table.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    return [line.split() for line in lines[rule + 1 :] if line[:1].strip()]


def test_an_id_whose_first_8_digits_name_two_orders_is_shown_longer_and_its_8_digits_are_ambiguous(db_urls):
    stem = uuid.uuid4().hex[:8]
    twins = [uuid.UUID(f"{stem}{n}" + "0" * 23) for n in (1, 2)]
    user = uuid.uuid4()
    with psycopg.connect(db_urls["orders"].replace("+psycopg", ""), autocommit=True) as conn:
        for twin in twins:
            conn.execute("INSERT INTO orders (id, user_id, amount) VALUES (%s, %s, 5)", (twin, user))

    listed = rows(ok("order", "list", "--user", str(user)).stdout)
    assert sorted(row[0] for row in listed) == sorted(t.hex[:12] for t in twins)  # 12 digits: 8 name both
    for row in listed:
        assert uuid.UUID(ok_json("order", "show", row[0])["id"]) in twins

    ambiguous = invoke("order", "show", stem)
    assert ambiguous.exit_code == 2, ambiguous.output
    assert "ambiguous" in ambiguous.stderr and len(ambiguous.stderr.strip().splitlines()) == 1


def test_a_start_of_an_id_that_names_nothing_is_not_found():
    result = invoke("order", "show", "0000" + uuid.uuid4().hex[:4])
    assert result.exit_code == 1 and "no order id starts with" in result.stderr


def test_accounts_take_a_start_of_the_user_id_and_list_short_ids():
    user = str(uuid.uuid4())
    ok("account", "create", user)
    assert ok_json("account", "deposit", user[:13], "7")["balance"] == 7  # with its dash, as copied
    assert ok_json("account", "balance", user[:8])["user_id"] == user
    assert ok_json("order", "create", user[:8], "3")["user_id"] == user  # looked up among the accounts
    shown = {row[0] for row in rows(ok("account", "list", "--limit", "10000").stdout)}
    assert any(user.replace("-", "").startswith(s) for s in shown)
