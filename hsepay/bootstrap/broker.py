"""The broker of a system: found (configured, or the embedded one, started if need be), probed once,
and turned into the client settings of each service."""

from __future__ import annotations

import asyncio
import logging

from hsepay import embedded
from hsepay.config import ConfigError, Settings
from hsepay.relay.broker import BrokerConfig
from hsepay.relay.probe import BrokerProbeError, BrokerRefusedLogin, choose_idempotence, probe_broker
from hsepay.relay.probe import describe as describe_broker
from hsepay.resilience import Backoff
from hsepay.system import BrokerEndpoint

__all__ = ["broker_config", "connect_broker", "find_broker", "locate_broker"]

log = logging.getLogger(__name__)


def locate_broker(settings: Settings) -> tuple[str, bool]:
    """(bootstrap servers, embedded?): HSEPAY_KAFKA, or the embedded broker, started if need be."""
    if settings.kafka.bootstrap_servers:
        return settings.kafka.bootstrap_servers, False
    try:
        return embedded.ensure_broker(settings.data_dir), True
    except (embedded.EmbeddedError, OSError) as exc:
        raise ConfigError(f"HSEPAY_KAFKA unset and the embedded broker could not start: {exc}") from exc


async def connect_broker(settings: Settings, stop: asyncio.Event | None = None) -> BrokerEndpoint:
    """Find the broker, probe what it is, decide idempotence, and say so in one log line.

    A broker that does not answer yet is waited for (workers may start before Kafka does), until
    `stop`; a broker that refuses the idempotence the settings demand is a ConfigError.
    """
    settings.kafka.security_options()  # a missing SASL setting is a ConfigError before anything starts
    bootstrap, is_embedded = locate_broker(settings)
    backoff = Backoff(settings.saga.max_backoff, initial=0.5)
    while True:
        try:
            info = await probe_broker(bootstrap, **settings.kafka.security_options())
            break
        except BrokerRefusedLogin as exc:
            raise ConfigError(f"HSEPAY_KAFKA_SASL_USERNAME/PASSWORD: {exc}") from None
        except BrokerProbeError as exc:
            log.warning("%s; retrying in %.1fs", exc, backoff.delay)
            if not await backoff.wait(stop or asyncio.Event()):
                raise ConfigError(f"HSEPAY_KAFKA: {exc}") from None
    try:
        idempotence, warning = choose_idempotence(info, settings.kafka.idempotence)
    except BrokerProbeError as exc:
        raise ConfigError(str(exc)) from None
    if warning:
        log.warning("%s", warning)
    origin = "embedded" if is_embedded else "HSEPAY_KAFKA"
    log.info("%s", describe_broker(info, idempotence=idempotence, origin=origin))
    return BrokerEndpoint(bootstrap, idempotence, is_embedded, info)


def find_broker(settings: Settings) -> BrokerEndpoint | None:
    """The configured broker, or the embedded one if it runs; None when there is none to ask.
    Starts nothing and probes nothing: what status views ask, they ask within a bounded time."""
    kafka = settings.kafka
    if kafka.bootstrap_servers:
        return BrokerEndpoint(kafka.bootstrap_servers, bool(kafka.idempotence), embedded=False)
    found = embedded.find_broker(settings.data_dir)
    return BrokerEndpoint(found, False, embedded=True) if found is not None else None


def broker_config(settings: Settings, endpoint: BrokerEndpoint, service: str) -> BrokerConfig:
    """The client settings of one service's Kafka clients."""
    kafka = settings.kafka
    return BrokerConfig(
        bootstrap_servers=endpoint.bootstrap_servers,
        idempotence=endpoint.idempotence,
        partitions=kafka.partitions,
        replication_factor=kafka.replication_factor,
        min_insync_replicas=kafka.min_insync_replicas,
        client_id=f"hsepay-{service}",
        delivery_timeout=kafka.delivery_timeout,
        security=kafka.security_options(),
        fetch_max_wait_ms=500 if endpoint.info is not None and not endpoint.info.looks_like_tansu else 5,
    )
