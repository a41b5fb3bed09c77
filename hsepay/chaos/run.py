"""A chaos run: every role its own process, orders over HTTP, faults on a schedule, then the verdict.

The verdict holds only if every intended order was accepted exactly once and reached a final
status within `settle_timeout` seconds of the last fault, no request got a 500 or hung, and the
money audit is clean (no double debit, conservation exact); with deposits on, every deposit
answered 200 must be in the ledger. The roles, faults, load and verdict are modules of their own.

(Over 300 lines: the run's sequence — set up, load, faults, drain, verdict — read top to bottom;
each step's machinery is in the modules named above.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import uuid
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from hsepay import registry
from hsepay.audit import check_invariants, snapshots
from hsepay.auth import TokenIssuer
from hsepay.bootstrap import built
from hsepay.bootstrap.event_secrets import fresh_environ
from hsepay.chaos.deposits import lost_deposits, make_deposits
from hsepay.chaos.faults import Fault
from hsepay.chaos.inject import inject_plan
from hsepay.chaos.load import place_orders
from hsepay.chaos.observe import Sampler, unavailable_window
from hsepay.chaos.report import ChaosReport
from hsepay.chaos.resources import ResourceSampler
from hsepay.chaos.roles import Role, RoleSet
from hsepay.chaos.setup import ChaosSetup
from hsepay.chaos.timeline import answer_figures, consumer_restart, detections
from hsepay.config import Settings
from hsepay.orders.tables import orders as orders_table
from hsepay.payments import operations as payments_ops
from hsepay.ports import free_ports
from hsepay.relay.broker import ensure_topics, partition_offsets
from hsepay.resilience import describe, is_unavailable
from hsepay.system import System
from hsepay.topic_audit import TopicWitness

__all__ = ["ChaosReport", "ChaosSetup", "role_commands", "run_chaos"]

log = logging.getLogger(__name__)

ROLES_READY_TIMEOUT = 180.0
"""Seconds the roles have to be ready: eight Python processes importing hsepay at once took over
60 s on the 2-core box while other test suites ran (load 17)."""


def role_commands(
    ports: dict[str, int], relays_per_service: int = 2, api_args: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Each role's name and `hsepay` arguments: per service its API, its relays and its consumer."""
    commands: dict[str, list[str]] = {}
    for spec in registry.with_database():
        commands[f"api-{spec.name}"] = ["serve", spec.name, "--port", str(ports.get(spec.name, 0)), *api_args]
        for i in range(relays_per_service):
            commands[f"relay-{spec.name}-{i + 1}"] = ["relay", spec.name]
        commands[f"consume-{spec.name}"] = ["consume", spec.name]
    return commands


def _roles(setup: ChaosSetup, ports: dict[str, int]) -> RoleSet:
    roles = RoleSet()
    for name, args in role_commands(ports, setup.relays_per_service, setup.api_args).items():
        roles.add(Role(name, args, setup.environ, setup.work_dir))
    return roles


async def _open_accounts(payments: AsyncEngine, users: int, seed: int) -> list[uuid.UUID]:
    """Users to order for: most funded, some poor (insufficient_funds), some without an account."""
    rng = random.Random(seed)
    people = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(users)]
    # Every 20th has no account (account_not_found), every 10th of the others too little money.
    balances = {user: 50 if i % 10 == 9 else 1_000_000 for i, user in enumerate(people) if i % 20 != 19}
    async with payments.begin() as conn:
        await payments_ops.open_funded_accounts(conn, balances)
    return people


# Ids per statement: an IN list is one bind parameter per id and PostgreSQL's protocol takes at most
# 65,535 (a one-hour soak at 20 orders/s accepted 72,000 and could not ask about them in one query).
ID_CHUNK = 5_000


async def _statuses(orders: AsyncEngine, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The status of each of `ids` the orders database has, a chunk of ids per statement."""
    statuses: dict[uuid.UUID, str] = {}
    async with orders.connect() as conn:
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            query = select(orders_table.c.id, orders_table.c.status).where(orders_table.c.id.in_(chunk))
            statuses.update({row.id: row.status for row in await conn.execute(query)})
    return statuses


async def _final_count(orders: AsyncEngine, ids: Sequence[uuid.UUID]) -> tuple[int, list[uuid.UUID]]:
    final = {order_id for order_id, status in (await _statuses(orders, ids)).items() if status != "created"}
    return len(final), [order_id for order_id in ids if order_id not in final]


async def _missing(orders: AsyncEngine, ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Accepted orders the orders database does not have at all."""
    present = await _statuses(orders, ids)
    return [order_id for order_id in ids if order_id not in present]


async def _drain(orders: AsyncEngine, ids: list[uuid.UUID], deadline: float) -> tuple[int, list[uuid.UUID]]:
    while True:
        try:
            final, pending = await _final_count(orders, ids)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            final, pending = 0, ids
        if not pending or time.time() > deadline:
            return final, pending
        await asyncio.sleep(0.2)


async def _duplicates(system: System) -> int:
    """Messages delivered more than once and dropped by an inbox: messages on a service's topics
    minus the events its inbox recorded (a lower bound where a broker lost messages)."""
    duplicates = 0
    for spec in registry.with_database():
        service = system[spec.name]
        offsets = await partition_offsets(service.broker, None, spec.consumes(system.settings.kafka))
        delivered = sum(end for end, _ in offsets.values())
        async with system.engine(spec.name).connect() as conn:
            recorded = (await conn.execute(select(func.count()).select_from(spec.database.inbox))).scalar_one()
        duplicates += max(0, delivered - recorded)
    return duplicates


async def _fresh_connections(system: System) -> None:
    """Drop every pooled database connection: the next checkout opens a new one."""
    for service in system.services.values():
        await system.engine(service.name).dispose()


async def run_chaos(
    setup: ChaosSetup,
    *,
    seed: int,
    orders: int,
    rate: float,
    users: int,
    plan: Sequence[Fault],
    settle_timeout: float = 30.0,
    sample_every: float | None = None,
) -> ChaosReport:
    """Run the roles, the load and the faults; always stop every role before returning. With
    `sample_every`, every role's memory and descriptors, each database's connections and each
    consumer group's lag are sampled that often (a soak: hsepay.chaos.resources), and the samples so
    far are kept in `work_dir/resources.json` after each, so a run that dies keeps its curves."""
    if "HSEPAY_AUTH_SECRET" not in setup.environ:
        # Run as production does: auth on, each user ordering with its own token; no rate limit,
        # since the whole load comes from one address.
        setup.environ = {**setup.environ, "HSEPAY_AUTH_SECRET": secrets.token_urlsafe(48), "HSEPAY_RATE_LIMIT": "0"}
    # Signed events, as on any shared broker: secrets of the run's own, unless the caller gave some.
    setup.environ = {**fresh_environ(spec.name for spec in registry.with_database()), **setup.environ}
    settings = Settings.from_env({**setup.environ, **(setup.observer_environ or {})})
    services = [spec.name for spec in registry.with_database()]
    ports = dict(zip(services, free_ports(len(services)), strict=True))
    roles = _roles(setup, ports)
    try:
        async with built(settings, registry.with_database(), database="migrate", broker="connect") as system:
            report = await _run(
                system, setup, roles, ports, seed, orders, rate, users, plan, settle_timeout, sample_every
            )
    except Exception as exc:
        log.error("chaos run failed: %s", describe(exc))
        raise
    finally:
        exits = roles.stop_all()
    report.role_exits = exits
    return report


async def _run(
    system: System, setup, roles, ports, seed, orders, rate, users, plan, settle_timeout, sample_every
) -> ChaosReport:
    settings, broker = system.settings, system.broker
    assert broker is not None
    for spec in registry.with_database():
        await ensure_topics(system[spec.name].broker, spec.produces(settings.kafka))
    people = await _open_accounts(system.engine("payments"), users, seed)
    roles.start_all()
    await roles.wait_ready(
        {f"api-{name}": f"http://127.0.0.1:{port}" for name, port in ports.items()}, ROLES_READY_TIMEOUT
    )
    log.info("chaos: roles up (%s), broker %s", ", ".join(roles.roles), broker.bootstrap_servers)

    sampler = Sampler(system.engine("orders"))
    async with sampler.running():
        return await _load_and_faults(
            system, setup, roles, ports, sampler, seed, orders, rate, plan, people, settle_timeout, sample_every
        )


async def _load_and_faults(
    system: System, setup, roles, ports, sampler, seed, orders, rate, plan, people, settle_timeout, sample_every
) -> ChaosReport:
    settings = system.settings
    begin = time.time()
    resources = (
        ResourceSampler(system, roles, sample_every, started=begin, journal=setup.work_dir / "resources.json")
        if sample_every
        else None
    )
    stop_resources = asyncio.Event()
    measuring = asyncio.create_task(resources.run(stop_resources)) if resources else None
    topics = {"orders": settings.kafka.orders_topic, "payment-status": settings.kafka.payment_status_topic}
    faults_over = asyncio.Event()
    injecting = asyncio.create_task(inject_plan(plan, setup, roles, topics, begin, faults_over))
    issuer = TokenIssuer(settings.security.auth_secrets)
    headers = {user: {"Authorization": f"Bearer {issuer.issue(user, 'user', ttl=24 * 3600)[0]}"} for user in people}
    depositing = None
    if setup.deposit_rate > 0:
        operator_id = uuid.uuid4()
        operator = {"Authorization": f"Bearer {issuer.issue(operator_id, 'operator', ttl=24 * 3600)[0]}"}
        depositing = asyncio.create_task(
            make_deposits(
                f"http://127.0.0.1:{ports['payments']}",
                [user for index, user in enumerate(people) if index % 20 != 19],  # those with an account
                rate=setup.deposit_rate,
                seed=seed,
                until=faults_over,
                headers=operator,
                caller=operator_id,
            )
        )
    load = await place_orders(
        f"http://127.0.0.1:{ports['orders']}",
        people,
        count=orders,
        rate=rate,
        seed=seed,
        until=faults_over,
        headers=headers,
    )
    records = await injecting
    deposits = await depositing if depositing is not None else None
    await _fresh_connections(system)  # a restarted PostgreSQL left the pool's connections dead
    last_fault = max((r.ended for r in records), default=load.finished)
    ids = list(load.accepted.values())
    final, pending = await _drain(system.engine("orders"), ids, max(last_fault, load.finished) + settle_timeout)
    drained_at = time.time()
    await sampler.stop()
    stop_resources.set()
    if measuring is not None:
        await measuring
    if not pending:
        sampler.samples.append((drained_at, 0, None))  # every order final: nothing is stuck any more
    for index, record in enumerate(records):
        until = records[index + 1].started if index + 1 < len(records) else drained_at
        record.unavailable = unavailable_window(load.unavailable, record.started, until)
        recovered = sampler.recovered_at(record.started, until, record.returned)
        if recovered is not None:
            record.recovery_s = round(recovered - record.started, 2)
            if record.returned is not None:
                record.after_return_s = round(max(0.0, recovered - record.returned), 2)
        healed = record.returned if record.returned is not None else record.ended
        record.figures = {
            **answer_figures(load, record.started, healed, until),
            "detected_s": detections(setup.work_dir, list(roles.roles), record.started, healed + 1.0),
        }
        if record.fault.kind == "kill-role" and record.fault.target.startswith("consume-"):
            record.figures.update(consumer_restart(setup.work_dir / f"{record.fault.target}.log", record.started))
    report = ChaosReport(seed=seed, intended=load.sent, load=load, faults=records, final=final)
    # The checks on fresh connections: a pooled one idle since a pg-restart is dead, and a one-hour
    # soak that ended in "server closed the connection unexpectedly" here lost its verdict.
    await _fresh_connections(system)
    missing = set(await _missing(system.engine("orders"), pending)) if pending else set()
    report.missing = [f"order {order_id} answered 202, not in the orders database" for order_id in missing]
    stuck = [f"order {order_id} still created" for order_id in pending if order_id not in missing]
    report.lost = report.missing + stuck
    report.drained_after_last_fault_s = round(drained_at - last_fault, 2) if records and not pending else None
    report.duplicates_absorbed = await _duplicates(system)
    async with system.engine("orders").connect() as conn:
        report.redriven = (
            await conn.execute(select(func.coalesce(func.sum(orders_table.c.payment_requests - 1), 0)))
        ).scalar_one()
    witness = TopicWitness(
        system["orders"].broker, settings.kafka.orders_topic, settings.kafka.payment_status_topic, timeout=120
    )
    await witness.mark()
    idle_allowed = witness.reading_allowance
    async with snapshots(system.engine("payments"), system.engine("orders"), idle_allowed=idle_allowed) as (p, o):
        audit = await check_invariants(p, o)
        # The topics too: what a failover made both databases forget (the money checks cannot see it).
        found = await witness.compare(p, o)
        audit.checks.extend(found.checks)
        audit.facts["topics"] = found.facts
        report.audit = audit.to_json()
        report.lost_orders = [lost.describe() for lost in found.lost_orders]
        if deposits is not None:
            lost = await lost_deposits(p, deposits)
            report.deposits = {
                "sent": deposits.sent,
                "acknowledged": len(deposits.acknowledged),
                "lost": lost,
                "statuses": {str(k): v for k, v in sorted(deposits.statuses.items())},
                "server_errors": deposits.server_errors,
                "hung": deposits.hung,
                "given_up": deposits.given_up,
            }
    if resources is not None:
        await resources.sample()  # after the drain: what is left once everything settled
        report.resources, report.segments = resources.series, resources.segments
    report.role_starts = {name: role.starts for name, role in roles.roles.items()}
    report.died = {name: roles.roles[name].proc.returncode for name in roles.dead()}
    return report
