"""A running saga under test, shared by the drain, latency and http scenarios, and its audit.

A `SagaSession` is the scratch databases and topics, the roles (every one its own process, or all
in one `hsepay up`), the bench's own access to both databases, and what it takes to say whether a
run was right: every order final, every invariant of DESIGN §5, no role dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from sqlalchemy import exists, func, select

from hsepay import registry
from hsepay.audit import check_invariants
from hsepay.auth import TokenIssuer
from hsepay.bench.results import Context, Verdict
from hsepay.bench.stack import API_ROLES, Scratch, Stack, describe_engines, saga_roles
from hsepay.bench.usage import Tracked
from hsepay.config import Settings
from hsepay.orders.tables import orders
from hsepay.payments import operations as payments_ops
from hsepay.relay.broker import ensure_topics
from hsepay.system import System

__all__ = ["SagaSession", "open_accounts"]

SAGA_DATABASES = {spec.name: f"hsepay_bench_{spec.name}" for spec in registry.with_database()}
RICH = 10**12
"""The balance of users who must never be refused (latency and http scenarios)."""


async def open_accounts(system: System, count: int, balance: int) -> list[uuid.UUID]:
    """`count` new users, each with an account holding `balance`, in one transaction."""
    people = [uuid.uuid4() for _ in range(count)]
    async with system.engine("payments").begin() as conn:
        await payments_ops.open_funded_accounts(conn, dict.fromkeys(people, balance))
    return people


@dataclass
class SagaSession:
    scratch: Scratch
    stack: Stack
    system: System
    ports: dict[str, int]
    layout: str
    engines: dict[str, str] = field(default_factory=dict)
    orders_placed: int = 0
    """Orders the bench placed so far: the first order after ready is timed only on a fresh stack."""
    _rich: list[uuid.UUID] = field(default_factory=list)
    _tokens: dict[uuid.UUID, str] = field(default_factory=dict)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, one_process: bool = False, auth: bool = False, apis_only: bool = False
    ) -> AsyncIterator[SagaSession]:
        """Prepare scratch data, start the roles, wait until every one is ready; stop them all at the end.
        `apis_only`: start the two APIs alone; `start_workers()` starts the relays and consumers later."""
        if apis_only and one_process:
            raise ValueError("one process (hsepay up) cannot start its APIs without its workers")
        scratch = await asyncio.to_thread(Scratch.prepare, settings, SAGA_DATABASES, auth=auth, name="saga")
        system = await scratch.system(SAGA_DATABASES)
        specs, ports = saga_roles(one_process=one_process, auth=auth)
        stack = Stack(scratch, specs)
        layout = "everything in one process (hsepay up)" if one_process else "every role its own process"
        session = cls(scratch, stack, system, ports, layout)
        try:
            for spec in registry.with_database():
                await ensure_topics(system[spec.name].broker, spec.produces(system.settings.kafka))
            session.engines = await describe_engines(system)
            await stack.start(only=API_ROLES if apis_only else None)
            yield session
        finally:
            await asyncio.to_thread(stack.stop)
            await scratch.close(system)

    @property
    def workers_held(self) -> bool:
        """Whether roles were held back at `open(apis_only=True)` and are not started yet."""
        return any(role.proc is None for role in self.stack.roles.roles.values())

    async def start_workers(self) -> float:
        """Start the roles `open(apis_only=True)` held back; seconds until they were ready."""
        return await self.stack.start_rest()

    @property
    def orders_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['orders']}"

    @property
    def topic(self) -> str:
        return self.system.settings.kafka.orders_topic

    def context(self, scenario: str) -> Context:
        tuning = {k: v for k, v in self.scratch.environ.items() if k not in _NOT_TUNING}
        return Context(scenario, self.layout, dict(self.engines), settings=tuning)

    def tracked(self) -> list[Tracked]:
        return self.stack.tracked() + self.scratch.tracked_engines()

    async def rich_users(self, count: int) -> list[uuid.UUID]:
        """Users who are never refused, opened once per session and shared by the scenarios."""
        if len(self._rich) < count:
            self._rich += await open_accounts(self.system, count - len(self._rich), RICH)
        return self._rich[:count]

    def headers(self, user: uuid.UUID) -> dict[str, str]:
        """The headers a user's requests carry: its bearer token when auth is on."""
        if not self.scratch.auth:
            return {}
        if user not in self._tokens:
            issuer = TokenIssuer(self.system.settings.security.auth_secrets)
            self._tokens[user] = issuer.issue(user, "user", ttl=24 * 3600)[0]
        return {"Authorization": f"Bearer {self._tokens[user]}"}

    async def any_created(self) -> bool:
        """Whether an order still waits for its payment result. EXISTS, not a count: a count over a
        100k-order backlog, polled, cost PostgreSQL more than the saga itself did."""
        async with self.system.engine("orders").connect() as conn:
            return (await conn.execute(select(exists().where(orders.c.status == "created")))).scalar_one()

    async def wait_all_final(self, timeout: float, interval: float = 0.05) -> float:
        """Seconds until no order is `created` any more (to within `interval`); TimeoutError after
        `timeout`. Scenarios that need the exact end read it from the orders' `updated_at`."""
        began = time.monotonic()
        while await self.any_created():
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"orders still created after {timeout:g}s")
            await asyncio.sleep(interval)
        return time.monotonic() - began

    async def db_now(self, service: str = "orders") -> float:
        """The database server's clock, as a Unix time."""
        async with self.system.engine(service).connect() as conn:
            return float((await conn.execute(select(func.extract("epoch", func.clock_timestamp())))).scalar_one())

    async def verdict(self, *, settle_timeout: float, expect: Sequence[str] = ()) -> Verdict:
        """Wait until every order is final (up to `settle_timeout`), then the money audit and the
        bench's own checks; `expect` adds problems the scenario found itself."""
        problems = list(expect)
        try:
            await self.wait_all_final(settle_timeout, interval=0.1)
        except TimeoutError as exc:
            problems.append(str(exc))
        async with self.system.engine("payments").connect() as p, self.system.engine("orders").connect() as o:
            report = await check_invariants(p, o)
        audit = report.to_json()
        for check in audit["checks"]:
            if not check["ok"]:
                problems.append(
                    f"audit: {check['name']}: {check['violations']} violation(s), e.g. {check['examples'][:2]}"
                )
        for name, code in self.stack.died().items():
            problems.append(f"role {name} died during the run (exit {code})")
        return Verdict(ok=not problems, problems=problems, audit=audit)


_NOT_TUNING = {
    "HSEPAY_PAYMENTS_DB",
    "HSEPAY_ORDERS_DB",
    "HSEPAY_KAFKA",
    "HSEPAY_AUTH_SECRET",
    "HSEPAY_DATA_DIR",
    "HSEPAY_ORDERS_TOPIC",
    "HSEPAY_PAYMENT_STATUS_TOPIC",
    "HSEPAY_GROUP_PREFIX",
    "HSEPAY_LOG_FORMAT",
    "HSEPAY_KAFKA_SASL_PASSWORD",
    "HSEPAY_ORDERS_EVENT_SECRET",
    "HSEPAY_PAYMENTS_EVENT_SECRET",
}
