"""The one amount rule of DESIGN §3: integers in minor units, 1 ≤ amount ≤ 10^12."""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = ["MAX_AMOUNT", "Amount"]

MAX_AMOUNT = 10**12

Amount = Annotated[int, msgspec.Meta(ge=1, le=MAX_AMOUNT, description="minor units, 1..10^12")]
