"""Orders REST API (seed contract, DESIGN §3)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal
from urllib.parse import urlencode

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, Parameter

from hsepay.api import bodies
from hsepay.api.bodies import json_body
from hsepay.api.guard import caller_of
from hsepay.api.idempotent import claim_for, replayed
from hsepay.api.openapi import AcceptedWithLocation, Documented, Paginated, problems
from hsepay.api.schemas import OrderAccepted, OrderView
from hsepay.auth import Principal
from hsepay.batching import GroupCommit
from hsepay.bounded_db import BoundedDatabase
from hsepay.errors import Forbidden, InvalidRequest
from hsepay.group_read import GroupRead
from hsepay.idempotency import Claim, StoredResponse
from hsepay.ids import parse_uuid
from hsepay.money import Amount
from hsepay.orders import operations
from hsepay.orders.errors import OrderNotFound
from hsepay.orders.intake import OrderRequest, Replayed
from hsepay.orders.model import CURSOR_PATTERN, MAX_DESCRIPTION, Order
from hsepay.orders.operations import NewOrder

Description = Annotated[str, msgspec.Meta(max_length=MAX_DESCRIPTION)]
OrderIdInPath = Annotated[str, Parameter(description="the order's id (a UUID)", schema_extra={"format": "uuid"})]
MAX_PAGE = 500


class CreateOrder(msgspec.Struct, forbid_unknown_fields=True):
    user_id: uuid.UUID
    amount: Amount
    description: Description = ""


def order_accepted(order: Order) -> StoredResponse:
    """What POST /orders answers for a new order (and stores under its Idempotency-Key)."""
    body = OrderAccepted(
        message="Order accepted",
        id=order.id,
        status=order.status,
        user_id=order.user_id,
        amount=order.amount,
        description=order.description,
        created_at=order.created_at,
    )
    return StoredResponse(202, msgspec.to_builtins(body), {"Location": f"/orders/{order.id}"})


def _order_view(order: Order) -> OrderView:
    return OrderView(
        id=order.id,
        user_id=order.user_id,
        amount=order.amount,
        description=order.description,
        status=order.status,  # type: ignore[arg-type]
        reason=order.reason,  # type: ignore[arg-type]
        created_at=order.created_at,
        updated_at=order.updated_at,
    )


def order_request(caller: Principal, data: CreateOrder, claim: Claim | None) -> OrderRequest:
    """What POST /orders submits for `caller`; Forbidden or InvalidRequest for what it must refuse."""
    caller.require_self(data.user_id, "place orders")
    if "\x00" in data.description:
        raise InvalidRequest("description must not contain NUL characters")
    return OrderRequest(NewOrder(user_id=data.user_id, amount=data.amount, description=data.description), claim)


def lane_request(caller: Principal, body: bytes) -> OrderRequest:
    """The fast lane's `prepare`: the body decoded as the handler decodes it, without a key."""
    return order_request(caller, bodies.decode_strict(body, CreateOrder), None)


def _parse_order_id(raw: str) -> uuid.UUID:
    order_id = parse_uuid(raw)
    if order_id is None:
        raise InvalidRequest(f"order id {raw[:64]!r} is not a UUID")
    return order_id


class OrderController(Controller):
    tags = ["orders"]

    @post(
        "/orders",
        status_code=202,
        summary="Place an order; payment follows asynchronously",
        responses=problems(400, 403, 409, 413, 415),
        operation_class=AcceptedWithLocation,
        **json_body(CreateOrder),
    )
    async def create_order(
        self,
        request: Request,
        intake: NamedDependency[GroupCommit],
        data: JSONBody[CreateOrder],
    ) -> Response[OrderAccepted]:
        # Concurrent requests share one transaction (group commit); each gets its own answer.
        answer = await intake.submit(order_request(caller_of(request), data, claim_for(request, "/orders", data)))
        if isinstance(answer, Replayed):
            return replayed(answer.response)
        return Response(answer.body, status_code=answer.status_code, headers=answer.headers)

    @get(
        ["/orders/{order_id:str}", "/order/{order_id:str}"],
        summary="One order",
        responses=problems(400, 404),
        operation_class=Documented,
    )
    async def get_order(
        self,
        request: Request,
        db: NamedDependency[BoundedDatabase],
        reader: NamedDependency[GroupRead],
        order_id: OrderIdInPath,
    ) -> OrderView:
        wanted = _parse_order_id(order_id)
        order = await db.wait_for(reader.get(wanted))  # bounded like a write: 503 from a silent database
        if order is None or not caller_of(request).may_act_for(order.user_id):
            raise OrderNotFound(f"no order {wanted}")  # another user's order: as if it did not exist
        return _order_view(order)

    @get(
        "/orders",
        summary="Orders, newest first, paginated by cursor (Link rel=next); a user token sees only its own",
        responses=problems(400, 403),
        operation_class=Paginated,
    )
    async def list_orders(
        self,
        request: Request,
        db: NamedDependency[BoundedDatabase],
        user_id: FromQuery[uuid.UUID | None] = None,
        status: FromQuery[Literal["created", "success", "failed"] | None] = None,
        limit: FromQuery[Annotated[int, Parameter(ge=1, le=MAX_PAGE)]] = 100,
        cursor: FromQuery[
            Annotated[str | None, Parameter(pattern=CURSOR_PATTERN, description="from Link rel=next: the next page")]
        ] = None,
    ) -> Response[list[OrderView]]:
        caller = caller_of(request)
        if not caller.is_operator:
            if user_id is not None and user_id != caller.subject:
                raise Forbidden("a user token lists only its own orders")
            user_id = caller.subject
        async with db.connect() as conn:
            page, next_cursor = await operations.list_orders(
                conn, user_id=user_id, status=status, limit=limit, cursor=cursor
            )
        headers = {}
        if next_cursor:
            query = {k: v for k, v in request.query_params.items() if k != "cursor"}
            query["cursor"] = next_cursor
            headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
        return Response([_order_view(order) for order in page], headers=headers)
