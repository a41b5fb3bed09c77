"""Asking the broker about itself without starting one: what status views (`hsepay outbox|inbox status`,
`hsepay status`) report, bounded in time, an unreachable broker being an answer rather than an error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hsepay import embedded
from hsepay.bootstrap import BrokerEndpoint, Runtime
from hsepay.relay.broker import BrokerConfig
from hsepay.resilience import describe

__all__ = ["NO_BROKER", "ask_broker", "running_broker"]

T = TypeVar("T")

BROKER_TIMEOUT = 10.0


def running_broker(rt: Runtime, service: str) -> BrokerConfig | None:
    """The configured broker, or the embedded one if it runs; None when there is none to ask."""
    kafka = rt.settings.kafka
    if kafka.bootstrap_servers:
        rt.broker = BrokerEndpoint(kafka.bootstrap_servers, bool(kafka.idempotence), embedded=False)
    else:
        found = embedded.find_broker(rt.settings.data_dir)
        if found is None:
            return None
        rt.broker = BrokerEndpoint(found, False, embedded=True)
    return rt.broker_config(service)


async def ask_broker(
    rt: Runtime, service: str, question: Callable[[BrokerConfig], Awaitable[T]]
) -> tuple[T | None, str | None]:
    """(answer, None), or (None, why not): status commands report an unreachable broker, bounded in time."""
    broker = running_broker(rt, service)
    if broker is None:
        return None, NO_BROKER
    try:
        return await asyncio.wait_for(question(broker), timeout=BROKER_TIMEOUT), None
    except TimeoutError:
        return None, f"no answer within {BROKER_TIMEOUT:g}s"
    except Exception as exc:  # KafkaError, OSError: reported, not raised
        return None, describe(exc)


NO_BROKER = "no broker running"
