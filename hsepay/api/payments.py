"""Payments REST API (seed contract, DESIGN §3)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay.api.bodies import strict_body
from hsepay.api.idempotent import run_idempotent
from hsepay.errors import InvalidRequest
from hsepay.idempotency import StoredResponse
from hsepay.ids import parse_uuid
from hsepay.money import Amount
from hsepay.payments import operations
from hsepay.payments.tables import idempotency_keys


class CreateAccount(msgspec.Struct, forbid_unknown_fields=True):
    user_id: uuid.UUID


class Deposit(msgspec.Struct, forbid_unknown_fields=True):
    amount: Amount
    user_id: uuid.UUID | None = None


class AccountCreated(msgspec.Struct):
    message: str
    user_id: uuid.UUID
    balance: int
    created_at: datetime


class BalanceRefilled(msgspec.Struct):
    message: str
    user_id: uuid.UUID
    balance: int


class Balance(msgspec.Struct):
    user_id: uuid.UUID
    balance: int


class AccountController(Controller):
    path = "/accounts"
    tags = ["accounts"]

    @post("/", status_code=201, summary="Open an account (one per user)")
    async def create_account(
        self, request: Request, engine: NamedDependency[AsyncEngine], data: JSONBody[CreateAccount]
    ) -> Response[AccountCreated]:
        data = await strict_body(request, CreateAccount)

        async def effect(conn) -> StoredResponse:
            account = await operations.create_account(conn, data.user_id)
            body = AccountCreated(
                message="Account created",
                user_id=account.user_id,
                balance=account.balance,
                created_at=account.created_at,
            )
            return StoredResponse(201, msgspec.to_builtins(body), {})

        return await run_idempotent(request, engine, idempotency_keys, data, effect)

    @post("/{user_id:str}/deposit", status_code=200, summary="Add money to an account")
    async def deposit(
        self,
        request: Request,
        engine: NamedDependency[AsyncEngine],
        user_id: FromPath[str],
        data: JSONBody[Deposit],
    ) -> Response[BalanceRefilled]:
        data = await strict_body(request, Deposit)
        owner = _parse_user_id(user_id)
        if data.user_id is not None and data.user_id != owner:
            raise InvalidRequest("user_id in the body differs from the one in the path")

        async def effect(conn) -> StoredResponse:
            reference = request.headers.get("idempotency-key")
            account = await operations.deposit(
                conn, owner, data.amount, reference=f"deposit:{owner}:{reference}" if reference else None
            )
            body = BalanceRefilled(message="Balance refilled", user_id=account.user_id, balance=account.balance)
            return StoredResponse(200, msgspec.to_builtins(body), {})

        return await run_idempotent(request, engine, idempotency_keys, data, effect)

    @get("/balance", summary="Balance of a user's account")
    async def balance(
        self,
        engine: NamedDependency[AsyncEngine],
        user_id: FromQuery[Annotated[uuid.UUID, Parameter(description="the account's user")]],
    ) -> Balance:
        async with engine.connect() as conn:
            account = await operations.get_account(conn, user_id)
        return Balance(user_id=account.user_id, balance=account.balance)


def _parse_user_id(raw: str) -> uuid.UUID:
    user_id = parse_uuid(raw)
    if user_id is None:
        raise InvalidRequest(f"user_id {raw[:64]!r} is not a UUID")
    return user_id
