"""Orders API (DESIGN §3): create, read, list with filters and cursor pages; the order and its
`order.created` outbox row are written in one transaction."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime

import pytest
from sqlalchemy import func, select

from hsepay.events import PaymentFailed
from hsepay.orders import operations
from hsepay.orders.tables import orders, outbox

ORDER_KEYS = {"id", "user_id", "amount", "description", "status", "reason", "created_at", "updated_at"}
NEXT_LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


async def place(client, user_id: uuid.UUID | None = None, amount: int = 100, description: str = "", **kwargs):
    body = {"user_id": str(user_id or uuid.uuid4()), "amount": amount, "description": description}
    response = await client.post("/orders", json=body, **kwargs)
    assert response.status_code == 202, response.text
    return response


# --- POST /orders -------------------------------------------------------------------------------


async def test_create_order_is_accepted_with_id_status_and_location(orders_client):
    user_id = uuid.uuid4()
    response = await orders_client.post(
        "/orders", json={"user_id": str(user_id), "amount": 250, "description": "coffee"}
    )
    assert response.status_code == 202
    body = response.json()
    assert body["message"] == "Order accepted"
    assert body["status"] == "created"
    order_id = uuid.UUID(body["id"])
    assert body["user_id"] == str(user_id)
    assert body["amount"] == 250
    assert body["description"] == "coffee"
    assert response.headers["location"] == f"/orders/{order_id}"


async def test_description_is_optional_and_may_be_1000_chars(orders_client):
    user_id = str(uuid.uuid4())
    bare = await orders_client.post("/orders", json={"user_id": user_id, "amount": 1})
    assert bare.status_code == 202
    assert bare.json()["description"] == ""
    full = await orders_client.post("/orders", json={"user_id": user_id, "amount": 10**12, "description": "é" * 1000})
    assert full.status_code == 202
    assert full.json()["description"] == "é" * 1000


async def test_description_over_1000_chars_is_refused(orders_client, orders_db, assert_problem):
    response = await orders_client.post(
        "/orders", json={"user_id": str(uuid.uuid4()), "amount": 5, "description": "x" * 1001}
    )
    assert_problem(response, 400)
    assert await orders_db.orders() == []


async def test_description_with_nul_is_refused(orders_client, orders_db, assert_problem):
    response = await orders_client.post(
        "/orders", json={"user_id": str(uuid.uuid4()), "amount": 5, "description": "a\x00b"}
    )
    assert_problem(response, 400)
    assert await orders_db.orders() == []


@pytest.mark.parametrize(
    "extra",
    [
        {"status": "success"},
        {"id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"},
        {"reason": None},
        {"created_at": "2020-01-01T00:00:00Z"},
    ],
    ids=["status", "id", "reason", "created_at"],
)
async def test_client_set_internal_fields_are_rejected(orders_client, orders_db, assert_problem, extra):
    body = {"user_id": str(uuid.uuid4()), "amount": 5, "description": "", **extra}
    assert_problem(await orders_client.post("/orders", json=body), 400)
    assert await orders_db.orders() == []
    assert await orders_db.outbox() == []


@pytest.mark.parametrize("amount", [0, -1, 10**12 + 1, 10**30, "100", 10.5, 1.0, True, None], ids=repr)
async def test_create_order_rejects_bad_amounts(orders_client, orders_db, assert_problem, amount):
    body = {"user_id": str(uuid.uuid4()), "amount": amount, "description": ""}
    assert_problem(await orders_client.post("/orders", json=body), 400)
    assert await orders_db.orders() == []


@pytest.mark.parametrize("user_id", ["not-a-uuid", "", 12, None], ids=repr)
async def test_create_order_rejects_bad_user_id(orders_client, assert_problem, user_id):
    body = {"user_id": user_id, "amount": 5, "description": ""}
    assert_problem(await orders_client.post("/orders", json=body), 400)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b"null",
        b"{}",
        b'"x"',
        b'{"amount": 5}',
        b'{"user_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "amount": 5, "description": "\xff"}',
    ],
    ids=["empty", "open-brace", "array", "null", "no-fields", "string", "no-user", "invalid-utf8-description"],
)
async def test_create_order_rejects_bad_bodies(orders_client, orders_db, assert_problem, content):
    response = await orders_client.post("/orders", content=content, headers={"content-type": "application/json"})
    assert_problem(response, 400)
    assert await orders_db.orders() == []


async def test_create_order_rejects_non_string_description(orders_client, assert_problem):
    body = {"user_id": str(uuid.uuid4()), "amount": 5, "description": 12}
    assert_problem(await orders_client.post("/orders", json=body), 400)


async def test_oversized_body_is_413(orders_client, orders_db, assert_problem):
    body = {"user_id": str(uuid.uuid4()), "amount": 5, "description": "x" * 100_000}
    assert_problem(await orders_client.post("/orders", json=body), 413)
    assert await orders_db.orders() == []


# --- the order and its outbox row, atomically ----------------------------------------------------


async def test_order_and_its_outbox_row_are_written_together(orders_client, orders_db):
    user_id = uuid.uuid4()
    body = (await place(orders_client, user_id, amount=321, description="tea")).json()
    [order] = await orders_db.orders()
    assert str(order.id) == body["id"]
    assert (order.user_id, order.amount, order.description, order.status) == (user_id, 321, "tea", "created")

    [row] = await orders_db.outbox()
    assert row.event_type == "order.created"
    assert row.topic == "orders"
    assert row.key == str(user_id)
    assert row.sent_at is None
    envelope = json.loads(row.value)
    assert envelope["type"] == "order.created"
    assert envelope["version"] == 1
    assert uuid.UUID(envelope["event_id"]) == row.event_id
    assert datetime.fromisoformat(envelope["occurred_at"]).tzinfo is not None
    assert envelope["data"] == {"order_id": body["id"], "user_id": str(user_id), "amount": 321}
    assert row.headers["event_type"] == "order.created"
    assert row.headers["event_id"] == envelope["event_id"]
    assert row.headers["correlation_id"] == body["id"]


async def test_rolled_back_transaction_leaves_neither_order_nor_outbox_row(orders_engine):
    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with orders_engine.begin() as conn:
            created = await operations.create_order(
                conn, user_id=uuid.uuid4(), amount=10, description="", topic="orders"
            )
            # Both rows exist inside the transaction ...
            assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 1
            raise Crash

    # ... and neither outlives it.
    async with orders_engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(orders))).scalar_one() == 0
        assert (await conn.execute(select(func.count()).select_from(outbox))).scalar_one() == 0
        assert (await conn.execute(select(orders).where(orders.c.id == created.id))).first() is None


async def test_failed_outbox_insert_leaves_no_order(orders_client, orders_db, orders_engine):
    # The database itself refuses the payment request (a trigger), after the order's row was written
    # by the same statement: the order must go with it.
    async with orders_engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE FUNCTION refuse_outbox() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'outbox unavailable'; END $$"
        )
        await conn.exec_driver_sql(
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_outbox()"
        )
    try:
        response = await orders_client.post("/orders", json={"user_id": str(uuid.uuid4()), "amount": 10})
    finally:
        async with orders_engine.begin() as conn:
            await conn.exec_driver_sql("DROP TRIGGER refuse_outbox ON outbox")
            await conn.exec_driver_sql("DROP FUNCTION refuse_outbox()")
    # A server fault, not the client's: 500 as problem+json, with no internals in it.
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "outbox unavailable" not in response.text
    assert await orders_db.orders() == []
    assert await orders_db.outbox() == []


# --- GET /order/{id}, GET /orders/{id} -----------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/order", "/orders"])
async def test_get_order_by_id(orders_client, prefix):
    user_id = uuid.uuid4()
    order_id = (await place(orders_client, user_id, amount=42, description="pen")).json()["id"]
    response = await orders_client.get(f"{prefix}/{order_id}")
    assert response.status_code == 200
    body = response.json()
    assert body.keys() == ORDER_KEYS
    assert body["id"] == order_id
    assert body["user_id"] == str(user_id)
    assert (body["amount"], body["description"], body["status"], body["reason"]) == (42, "pen", "created", None)


@pytest.mark.parametrize("prefix", ["/order", "/orders"])
async def test_get_unknown_order_is_404(orders_client, assert_problem, prefix):
    assert_problem(await orders_client.get(f"{prefix}/{uuid.uuid4()}"), 404)


@pytest.mark.parametrize("prefix", ["/order", "/orders"])
@pytest.mark.parametrize("order_id", ["not-a-uuid", "123", "3fa85f64-5717-4562-b3fc-2c963f66afa", "x" * 500])
async def test_get_malformed_order_id_is_400(orders_client, assert_problem, prefix, order_id):
    assert_problem(await orders_client.get(f"{prefix}/{order_id}"), 400)


async def test_location_header_resolves_to_the_order(orders_client):
    created = await place(orders_client)
    response = await orders_client.get(created.headers["location"])
    assert response.status_code == 200
    assert response.json()["id"] == created.json()["id"]


# --- GET /orders ---------------------------------------------------------------------------------


async def test_list_orders_newest_first_with_all_keys(orders_client):
    ids = [(await place(orders_client, amount=n)).json()["id"] for n in range(1, 5)]
    response = await orders_client.get("/orders")
    assert response.status_code == 200
    body = response.json()
    assert [o["id"] for o in body] == ids[::-1]
    assert all(o.keys() == ORDER_KEYS for o in body)
    assert "link" not in response.headers


async def test_list_orders_empty(orders_client):
    response = await orders_client.get("/orders")
    assert response.status_code == 200
    assert response.json() == []


async def test_list_orders_filters_by_user_and_status(orders_client, orders_engine):
    alice, bob = uuid.uuid4(), uuid.uuid4()
    alices = [(await place(orders_client, alice, amount=n)).json()["id"] for n in (1, 2, 3)]
    bobs = [(await place(orders_client, bob, amount=n)).json()["id"] for n in (4, 5)]
    async with orders_engine.begin() as conn:
        refused = PaymentFailed(order_id=uuid.UUID(alices[0]), user_id=alice, amount=1, reason="insufficient_funds")
        settlement = await operations.apply_payment_results(conn, [refused])
    assert [s.order_id for s in settlement.settled] == [uuid.UUID(alices[0])]

    async def listed(**params) -> list[str]:
        response = await orders_client.get("/orders", params=params)
        assert response.status_code == 200, response.text
        return [o["id"] for o in response.json()]

    assert await listed(user_id=str(alice)) == alices[::-1]
    assert await listed(user_id=str(bob)) == bobs[::-1]
    assert await listed(user_id=str(uuid.uuid4())) == []
    assert await listed(status="failed") == [alices[0]]
    assert await listed(status="created", user_id=str(alice)) == alices[:0:-1]
    assert await listed(status="success") == []
    failed = (await orders_client.get("/orders", params={"status": "failed"})).json()[0]
    assert (failed["status"], failed["reason"]) == ("failed", "insufficient_funds")


async def test_pages_follow_link_next_without_gaps_or_duplicates(orders_client):
    user_id = uuid.uuid4()
    created = [(await place(orders_client, user_id, amount=n)).json()["id"] for n in range(1, 8)]
    await place(orders_client)  # another user's order must not appear in the filtered walk

    seen, pages = [], []
    url, params = "/orders", {"limit": 3, "user_id": str(user_id)}
    while True:
        response = await orders_client.get(url, params=params)
        assert response.status_code == 200, response.text
        page = [o["id"] for o in response.json()]
        pages.append(len(page))
        seen += page
        link = response.headers.get("link")
        if link is None:
            break
        match = NEXT_LINK.match(link)
        assert match, link
        url, params = match["url"], None
        assert url.startswith("/orders?")
    assert pages == [3, 3, 1]
    assert seen == created[::-1]


async def test_exactly_full_last_page_has_no_next_link(orders_client):
    for n in range(1, 4):
        await place(orders_client, amount=n)
    response = await orders_client.get("/orders", params={"limit": 3})
    assert len(response.json()) == 3
    assert "link" not in response.headers


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc", "1.5", ""])
async def test_list_limit_out_of_bounds_is_400(orders_client, assert_problem, limit):
    assert_problem(await orders_client.get("/orders", params={"limit": limit}), 400)


@pytest.mark.parametrize("limit", [1, 500])
async def test_list_limit_bounds_are_accepted(orders_client, limit):
    await place(orders_client)
    await place(orders_client)
    response = await orders_client.get("/orders", params={"limit": limit})
    assert response.status_code == 200
    assert len(response.json()) == min(limit, 2)


@pytest.mark.parametrize(
    "params",
    [{"user_id": "nope"}, {"status": "paid"}, {"status": ""}, {"user_id": "123"}],
    ids=["user_id", "status", "empty-status", "short-user_id"],
)
async def test_list_rejects_bad_filters(orders_client, assert_problem, params):
    assert_problem(await orders_client.get("/orders", params=params), 400)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        "x" * 201,
        "MjAyMC0wMS0wMVQwMDowMDowMCswMDowMHxub3QtYS11dWlk",  # the former base64 spelling
        "1." + "0" * 31,  # 31 hex digits
        "1." + "0" * 31 + "G",
        "1." + "A" * 32,  # upper case: one spelling only
        "-1." + "0" * 32,
        "1" * 18 + "." + "0" * 32,  # past the year 5138
        "1 ." + "0" * 32,
        "1." + "0" * 32 + "\n",
    ],
)
async def test_list_rejects_bad_cursor(orders_client, assert_problem, cursor):
    await place(orders_client)
    assert_problem(await orders_client.get("/orders", params={"cursor": cursor}), 400)


@pytest.mark.parametrize("cursor", ["0." + "0" * 32, "9" * 17 + "." + "f" * 32, "1700000000000000." + "a" * 32])
async def test_every_cursor_the_schema_allows_is_a_position(orders_client, cursor):
    """What the OpenAPI document allows the API accepts (schemathesis's positive-data check): any
    well-formed cursor is a position in the listing, before or after every order."""
    placed = (await place(orders_client)).json()["id"]
    response = await orders_client.get("/orders", params={"cursor": cursor})
    assert response.status_code == 200, response.text
    expected = [placed] if cursor.startswith("9") else []
    assert [order["id"] for order in response.json()] == expected


# --- Idempotency-Key ----------------------------------------------------------------------------


async def test_create_order_replay_with_key_has_one_effect(orders_client, orders_db, assert_problem):
    body = {"user_id": str(uuid.uuid4()), "amount": 77, "description": "once"}
    headers = {"Idempotency-Key": "order-1"}
    first = await orders_client.post("/orders", json=body, headers=headers)
    again = await orders_client.post("/orders", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await orders_db.orders()) == 1
    assert len(await orders_db.outbox()) == 1

    other = await orders_client.post("/orders", json={**body, "amount": 78}, headers=headers)
    assert_problem(other, 409)
    assert len(await orders_db.orders()) == 1
