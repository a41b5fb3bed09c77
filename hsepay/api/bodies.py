"""Strict request bodies: Litestar converts leniently ("100" → 100, 10.0 → 10); money must not."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

T = TypeVar("T")


async def strict_body(request: Request, schema: type[T]) -> T:
    try:
        return msgspec.json.decode(await request.body(), type=schema, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationException(detail=f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationException(detail=f"Request body is not valid JSON: {exc}") from None
