"""Settings: one dataclass per concern, read from the environment once and cached.

Nothing here connects to anything; a bad value raises ``ConfigError`` whose message names the
variable, so the CLI can print one line and exit 2.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "ApiSettings",
    "ConfigError",
    "ConsumerSettings",
    "DatabaseSettings",
    "KafkaSettings",
    "RelaySettings",
    "SagaSettings",
    "Settings",
    "get_settings",
    "normalise_db_url",
]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


_ACCEPTED_DB_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}


def normalise_db_url(raw: str, variable: str) -> str:
    """Turn a PostgreSQL URL into the SQLAlchemy psycopg 3 form, or raise ConfigError."""
    raw = raw.strip()
    try:
        url: URL = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            f"{variable}: {raw!r} is not a database URL (expected postgresql://user:pass@host:port/dbname)"
        ) from None
    if url.drivername not in _ACCEPTED_DB_SCHEMES:
        raise ConfigError(
            f"{variable}: scheme {url.drivername!r} is not supported; hsepay runs on PostgreSQL only "
            "(postgresql://user:pass@host:port/dbname)"
        )
    if not url.database:
        raise ConfigError(f"{variable}: {raw!r} names no database (postgresql://host/dbname)")
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (use true or false)")


_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _NAME.match(raw):
        raise ConfigError(f"{name}: {raw!r} is not a valid Kafka name (letters, digits, '.', '_', '-')")
    return raw


@dataclass(frozen=True)
class DatabaseSettings:
    payments_url: str | None = None
    """HSEPAY_PAYMENTS_DB, normalised; None means the embedded server's `payments` database."""
    orders_url: str | None = None
    """HSEPAY_ORDERS_DB, normalised; None means the embedded server's `orders` database."""
    pool_size: int = 10
    """HSEPAY_DB_POOL_SIZE: connections per service engine in one process."""

    def url_for(self, service: str) -> str | None:
        """The configured URL of a service's database; None means the embedded one."""
        return {"payments": self.payments_url, "orders": self.orders_url}[service]


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str | None = None
    """HSEPAY_KAFKA: comma-separated bootstrap servers; None means the embedded Tansu broker."""
    partitions: int = 6
    """HSEPAY_KAFKA_PARTITIONS: partitions of each topic hsepay creates."""
    replication_factor: int = 1
    """HSEPAY_KAFKA_REPLICATION: replication factor of each topic hsepay creates."""
    idempotence: bool | None = None
    """HSEPAY_KAFKA_IDEMPOTENCE: producer idempotence; None = on for external brokers, off for the
    embedded Tansu broker (it rejects InitProducerId)."""
    orders_topic: str = "orders"
    """HSEPAY_ORDERS_TOPIC: topic of payment requests (the seed's name by default)."""
    payment_status_topic: str = "payment-status"
    """HSEPAY_PAYMENT_STATUS_TOPIC: topic of payment results (the seed's name by default)."""
    group_prefix: str = "hsepay"
    """HSEPAY_GROUP_PREFIX: consumer groups are `<prefix>-payments` and `<prefix>-orders`."""


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 1000
    """HSEPAY_RELAY_BATCH: outbox rows claimed and published per round."""
    poll_interval: float = 1.0
    """HSEPAY_RELAY_POLL: seconds between polls when no NOTIFY arrives (a fallback, not a tick)."""
    retention: float = 300.0
    """HSEPAY_OUTBOX_RETENTION: seconds a sent outbox row is kept before it is purged."""
    purge_interval: float = 30.0
    """Seconds between purges of sent outbox rows."""
    standby_interval: float = 1.0
    """Seconds a standby relay waits between attempts to become the active one."""
    max_backoff: float = 10.0
    """Upper bound of the exponential backoff after broker errors, in seconds."""


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = 500
    """HSEPAY_CONSUMER_BATCH: messages applied per database transaction at most."""
    max_attempts: int = 5
    """HSEPAY_CONSUMER_MAX_ATTEMPTS: failures of one message before it is quarantined."""
    inbox_retention: float = 7 * 24 * 3600.0
    """HSEPAY_INBOX_RETENTION: seconds a processed inbox row is kept (duplicates older than this are
    still harmless: the payment decision and the ledger are unique per order id)."""


@dataclass(frozen=True)
class SagaSettings:
    redrive_after: float = 30.0
    """HSEPAY_REDRIVE_AFTER: seconds an order may stay `created` before its payment request is re-sent."""
    redrive_interval: float = 5.0
    """Seconds between scans for orders to re-drive."""


@dataclass(frozen=True)
class ApiSettings:
    idempotency_ttl: float = 24 * 3600.0
    """HSEPAY_IDEMPOTENCY_TTL: seconds an Idempotency-Key is remembered (as Stripe: 24 hours)."""
    purge_interval: float = 600.0
    """Seconds between purges of expired idempotency keys by each API process."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(".hsepay"))
    """HSEPAY_DATA_DIR: where embedded engines keep their files."""
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    saga: SagaSettings = field(default_factory=SagaSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    auth_secret: str | None = None
    """HSEPAY_AUTH_SECRET: bearer-token secret; unset means auth is off (development only)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def db_url(name: str) -> str | None:
            raw = env.get(name, "").strip()
            return normalise_db_url(raw, name) if raw else None

        kafka_raw = env.get("HSEPAY_KAFKA", "").strip()
        if kafka_raw:
            for server in kafka_raw.split(","):
                host, _, port = server.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise ConfigError(f"HSEPAY_KAFKA: {server!r} is not host:port")
        return cls(
            data_dir=Path(env.get("HSEPAY_DATA_DIR") or ".hsepay").expanduser(),
            db=DatabaseSettings(
                payments_url=db_url("HSEPAY_PAYMENTS_DB"),
                orders_url=db_url("HSEPAY_ORDERS_DB"),
                pool_size=_int(env, "HSEPAY_DB_POOL_SIZE", 10),
            ),
            kafka=KafkaSettings(
                bootstrap_servers=kafka_raw or None,
                partitions=_int(env, "HSEPAY_KAFKA_PARTITIONS", 6),
                replication_factor=_int(env, "HSEPAY_KAFKA_REPLICATION", 1),
                idempotence=_bool(env, "HSEPAY_KAFKA_IDEMPOTENCE"),
                orders_topic=_name(env, "HSEPAY_ORDERS_TOPIC", "orders"),
                payment_status_topic=_name(env, "HSEPAY_PAYMENT_STATUS_TOPIC", "payment-status"),
                group_prefix=_name(env, "HSEPAY_GROUP_PREFIX", "hsepay"),
            ),
            relay=RelaySettings(
                batch_size=_int(env, "HSEPAY_RELAY_BATCH", 1000),
                poll_interval=_float(env, "HSEPAY_RELAY_POLL", 1.0),
                retention=_float(env, "HSEPAY_OUTBOX_RETENTION", 300.0),
            ),
            consumer=ConsumerSettings(
                batch_size=_int(env, "HSEPAY_CONSUMER_BATCH", 500),
                max_attempts=_int(env, "HSEPAY_CONSUMER_MAX_ATTEMPTS", 5),
                inbox_retention=_float(env, "HSEPAY_INBOX_RETENTION", 7 * 24 * 3600.0),
            ),
            saga=SagaSettings(redrive_after=_float(env, "HSEPAY_REDRIVE_AFTER", 30.0)),
            api=ApiSettings(idempotency_ttl=_float(env, "HSEPAY_IDEMPOTENCY_TTL", 24 * 3600.0)),
            auth_secret=env.get("HSEPAY_AUTH_SECRET") or None,
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
