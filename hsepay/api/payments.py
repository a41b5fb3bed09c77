"""Payments REST API (seed contract, DESIGN §3)."""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery, JSONBody, Parameter

from hsepay.api.bodies import json_body
from hsepay.api.guard import caller_of
from hsepay.api.idempotent import idempotency_key, run_idempotent
from hsepay.api.openapi import Documented, Idempotent, problems
from hsepay.api.schemas import AccountCreated, Balance, BalanceRefilled
from hsepay.bounded_db import BoundedDatabase
from hsepay.errors import Forbidden, InvalidRequest
from hsepay.idempotency import StoredResponse
from hsepay.ids import parse_uuid
from hsepay.money import Amount
from hsepay.payments import operations
from hsepay.payments.errors import AccountNotFound
from hsepay.payments.tables import idempotency_keys

UserIdInPath = Annotated[str, Parameter(description="the account's user (a UUID)", schema_extra={"format": "uuid"})]


class CreateAccount(msgspec.Struct, forbid_unknown_fields=True):
    user_id: uuid.UUID


class Deposit(msgspec.Struct, forbid_unknown_fields=True):
    amount: Amount
    user_id: uuid.UUID | None = None


class AccountController(Controller):
    path = "/accounts"
    tags = ["accounts"]

    @post(
        "/",
        status_code=201,
        summary="Open an account (one per user)",
        responses=problems(400, 403, 409, 413, 415),
        operation_class=Idempotent,
        **json_body(CreateAccount),
    )
    async def create_account(
        self, request: Request, db: NamedDependency[BoundedDatabase], data: JSONBody[CreateAccount]
    ) -> Response[AccountCreated]:
        caller_of(request).require_self(data.user_id, "open an account")

        async def effect(conn) -> StoredResponse:
            account = await operations.create_account(conn, data.user_id)
            body = AccountCreated(
                message="Account created",
                user_id=account.user_id,
                balance=account.balance,
                created_at=account.created_at,
            )
            return StoredResponse(201, msgspec.to_builtins(body), {})

        return await run_idempotent(request, db, idempotency_keys, "/accounts", data, effect)

    @post(
        "/{user_id:str}/deposit",
        status_code=200,
        summary="Add money to an account (an operator action unless HSEPAY_AUTH_SELF_DEPOSIT)",
        responses=problems(400, 403, 404, 409, 413, 415),
        operation_class=Idempotent,
        **json_body(Deposit),
    )
    async def deposit(
        self,
        request: Request,
        db: NamedDependency[BoundedDatabase],
        self_deposit: NamedDependency[bool],
        user_id: UserIdInPath,
        data: JSONBody[Deposit],
    ) -> Response[BalanceRefilled]:
        owner = _parse_user_id(user_id)
        if data.user_id is not None and data.user_id != owner:
            raise InvalidRequest("user_id in the body differs from the one in the path")
        caller = caller_of(request)
        if not caller.is_operator:
            if not self_deposit:
                raise Forbidden(
                    "a deposit is an operator action (HSEPAY_AUTH_SELF_DEPOSIT lets users top up their own)"
                )
            if caller.subject != owner:
                raise _not_found(owner)  # another user's account: as if it did not exist
        key = idempotency_key(request)
        # Scoped like the stored response (idempotent.claim_for): one caller's key is not another's.
        reference = None if key is None else f"deposit:{owner}:{key}"
        if key is not None and caller.subject is not None:
            reference = f"deposit:{owner}:by:{caller.subject}:{key}"

        async def effect(conn) -> StoredResponse:
            account = await operations.deposit(conn, owner, data.amount, reference=reference)
            body = BalanceRefilled(message="Balance refilled", user_id=account.user_id, balance=account.balance)
            return StoredResponse(200, msgspec.to_builtins(body), {})

        return await run_idempotent(request, db, idempotency_keys, f"/accounts/{owner}/deposit", data, effect)

    @get("/balance", summary="Balance of a user's account", responses=problems(400, 404), operation_class=Documented)
    async def balance(
        self,
        request: Request,
        db: NamedDependency[BoundedDatabase],
        user_id: FromQuery[Annotated[uuid.UUID, Parameter(description="the account's user")]],
    ) -> Balance:
        if not caller_of(request).may_act_for(user_id):
            raise _not_found(user_id)  # another user's account: as if it did not exist
        async with db.connect() as conn:
            account = await operations.get_account(conn, user_id)
        return Balance(user_id=account.user_id, balance=account.balance)


def _not_found(user_id: uuid.UUID) -> AccountNotFound:
    return AccountNotFound(f"no account for user {user_id}")


def _parse_user_id(raw: str) -> uuid.UUID:
    user_id = parse_uuid(raw)
    if user_id is None:
        raise InvalidRequest(f"user_id {raw[:64]!r} is not a UUID")
    return user_id
