"""Which secrets sign and verify each service's events (docs/decisions.md, "Event secrets").

- Configured (`HSEPAY_<SERVICE>_EVENT_SECRET`, current first): used as they are, on any broker.
- Unset, on the embedded broker (`HSEPAY_KAFKA` unset, a single-host development setup): a secret
  is generated once per service under `HSEPAY_DATA_DIR` (mode 0600) and shared by every process
  that uses that data directory, so `hsepay up`, `hsepay relay` and `hsepay consume` agree.
- Unset, on any other broker: a ConfigError (exit 2) naming the variable, unless
  `HSEPAY_EVENTS_ALLOW_UNSIGNED=true` (a migration), which is warned about at every start.
  A development default never becomes a production one by accident.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from hsepay import registry
from hsepay.config import ConfigError, EventSettings, Settings
from hsepay.registry import ServiceSpec
from hsepay.relay.signing import EventSigner, EventVerifier, ProducerKeys

__all__ = [
    "development_secret",
    "fresh_environ",
    "history_verifier",
    "new_secret",
    "secrets_for",
    "signer_for",
    "verifier_for",
    "verifier_of",
    "warn_if_unsigned",
]

log = logging.getLogger(__name__)

UNSIGNED_WARNING = (
    "EVENTS WITHOUT A SIGNATURE ARE ACCEPTED (HSEPAY_EVENTS_ALLOW_UNSIGNED=true): anyone who can write to "
    "%s can ask for debits and settle orders. Use it only while producers are being upgraded, then unset it."
)


def new_secret() -> str:
    """A fresh event secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def fresh_environ(services: Iterable[str]) -> dict[str, str]:
    """New secrets for `services` as environment variables: for the processes a test harness
    (`hsepay bench`, `hsepay chaos`) starts against a broker of its own."""
    return {EventSettings.variable_of(service): new_secret() for service in services}


def development_secret(data_dir: Path, service: str) -> str:
    """The generated secret of `service` under `data_dir`, created on first use (0600, race-free)."""
    path = Path(data_dir) / f"event-secret-{service}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_secret())
        try:
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(draft, path)
        finally:
            draft.unlink()
    return path.read_text().strip()


def _embedded_broker(settings: Settings) -> bool:
    return settings.kafka.bootstrap_servers is None


def secrets_for(settings: Settings, service: str) -> tuple[str, ...]:
    """The secrets of `service`'s events, current first; empty when there are none (unsigned)."""
    configured = settings.events.secrets_of(service)
    if configured:
        return configured
    if _embedded_broker(settings):
        secret = development_secret(settings.data_dir, service)
        log.info(
            "%s events are signed with a development secret generated in %s (embedded broker); "
            "set %s on any shared broker",
            service,
            settings.data_dir,
            settings.events.variable_of(service),
        )
        return (secret,)
    if settings.events.allow_unsigned:
        return ()
    variable = settings.events.variable_of(service)
    raise ConfigError(
        f"{variable} is not set: {service} events cannot be signed or verified on the broker at HSEPAY_KAFKA "
        f"(set it in every process of both services; make one with: python -c 'import secrets; "
        f"print(secrets.token_urlsafe(32))')"
    )


def signer_for(settings: Settings, service: str) -> EventSigner | None:
    """What the relay of `service` signs with (None: it publishes unsigned, during a migration)."""
    found = secrets_for(settings, service)
    return EventSigner(service, found[0].encode()) if found else None


def verifier_for(settings: Settings, producers: Mapping[str, str]) -> EventVerifier:
    """The check of a consumer whose topics `producers` maps to the service producing each."""
    keys = {
        topic: ProducerKeys(
            producer,
            tuple(secret.encode() for secret in secrets_for(settings, producer)),
            settings.events.variable_of(producer),
        )
        for topic, producer in producers.items()
    }
    return EventVerifier(keys, max_age=settings.consumer.inbox_retention, allow_unsigned=settings.events.allow_unsigned)


def verifier_of(settings: Settings, spec: ServiceSpec) -> EventVerifier:
    """The proof-of-origin check of what `spec` consumes: each topic by the secrets of the service
    that produces it (the registry says which)."""
    kafka = settings.kafka
    producers = {topic: other.name for other in registry.with_database() for topic in other.produces(kafka)}
    return verifier_for(settings, {topic: producers[topic] for topic in spec.consumes(kafka)})


def history_verifier(settings: Settings) -> EventVerifier:
    """The signature check of an audit reading the saga's topics back: every topic by its producer's
    secrets, as the consumers check them, but at any age (a replay is no forgery to an audit, and
    the history it reads is older than the inbox's retention by design)."""
    kafka = settings.kafka
    producers = {topic: spec.name for spec in registry.with_database() for topic in spec.produces(kafka)}
    return dataclasses.replace(verifier_for(settings, producers), max_age=math.inf)


def warn_if_unsigned(settings: Settings, topics: list[str]) -> None:
    """The start-up warning of a process that accepts unsigned events."""
    if settings.events.allow_unsigned:
        log.warning(UNSIGNED_WARNING, ", ".join(topics) or "the topics")
