"""A service's worker parts: the client settings of its Kafka clients, its outbox relay, its inbox
consumer and the background jobs that run beside them."""

from __future__ import annotations

import dataclasses

from hsepay.bootstrap.broker import broker_config
from hsepay.bootstrap.event_secrets import signer_for, verifier_of, warn_if_unsigned
from hsepay.config import ConfigError, Settings
from hsepay.relay.consumer import InboxConsumer
from hsepay.relay.outbox import OutboxRelay
from hsepay.system import BrokerEndpoint, Service

__all__ = ["worker_parts"]


def worker_parts(
    settings: Settings,
    service: Service,
    broker: BrokerEndpoint,
    *,
    relays: bool,
    consumers: bool,
    only_consumers: bool,
) -> Service:
    """`service` with its broker settings and, as asked, its relay, its consumer and their jobs."""
    spec, engine, url = service.spec, service.engine, service.url
    database = spec.database
    assert database is not None and engine is not None and url is not None
    config = broker_config(settings, broker, spec.name)
    relay = consumer = None
    jobs = []
    if relays:
        relay = OutboxRelay(
            name=spec.name,
            engine=engine,
            db_url=url,
            db_policy=settings.db.policy(),
            outbox=database.outbox,
            broker=config,
            topics=spec.produces(settings.kafka),
            settings=settings.relay,
            max_backoff=settings.saga.max_backoff,
            signer=signer_for(settings, spec.name),
        )
        jobs.append(relay.purge_job())
    if consumers:
        if spec.handlers is None:
            raise ConfigError(f"the {spec.name} service consumes no events")
        verifier = verifier_of(settings, spec)
        warn_if_unsigned(settings, list(verifier.producers))
        consumer = InboxConsumer(
            name=spec.name,
            engine=engine,
            inbox_table=database.inbox,
            handlers=spec.handlers(settings),
            broker=config,
            topics=spec.consumes(settings.kafka),
            group_id=settings.kafka.group_of(spec.name),
            settings=settings.consumer,
            max_backoff=settings.saga.max_backoff,
            static_assignment=only_consumers and broker.embedded,
            verify=verifier.verify,
        )
        jobs += [consumer.purge_job(), *spec.jobs(engine, settings)]
    return dataclasses.replace(service, broker=config, relay=relay, consumer=consumer, jobs=tuple(jobs))
