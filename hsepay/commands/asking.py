"""Asking the broker about itself without starting one: what status views (`hsepay outbox|inbox status`,
`hsepay status`) report, bounded in time, an unreachable broker being an answer rather than an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from hsepay.relay.broker import BrokerConfig
    from hsepay.system import Service

__all__ = ["NO_BROKER", "ask_broker"]

T = TypeVar("T")

BROKER_TIMEOUT = 10.0


async def ask_broker(service: Service, question: Callable[[BrokerConfig], Awaitable[T]]) -> tuple[T | None, str | None]:
    """(answer, None), or (None, why not): status commands report an unreachable broker, bounded in
    time. The service's system was built with broker="find": a broker that does not run is NO_BROKER."""
    if service.broker is None:
        return None, NO_BROKER
    try:
        return await asyncio.wait_for(question(service.broker), timeout=BROKER_TIMEOUT), None
    except TimeoutError:
        return None, f"no answer within {BROKER_TIMEOUT:g}s"
    except Exception as exc:  # KafkaError, OSError: reported, not raised
        from hsepay.resilience import describe

        return None, describe(exc)


NO_BROKER = "no broker running"
