"""Settings: one dataclass per concern; each field binds its env var, default, parser and doc once.

Nothing here connects to anything. `Settings.from_env(env)` is the only way settings are built, in
production and in tests alike; a bad value raises ``ConfigError`` whose message names the variable,
so the CLI can print one line and exit 2. `Settings.documented()` lists every variable for the
README and `hsepay doctor`.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "ApiSettings",
    "ConfigError",
    "ConsumerSettings",
    "DatabaseSettings",
    "GatewaySettings",
    "KafkaSettings",
    "ObservabilitySettings",
    "RelaySettings",
    "SagaSettings",
    "SecuritySettings",
    "Settings",
    "get_settings",
    "normalise_db_url",
]


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


Parser = Callable[[str, str], Any]
"""(raw value, variable name) -> parsed value, or ConfigError naming the variable."""


@dataclass(frozen=True)
class Setting:
    env: str | None
    parse: Parser | None
    doc: str


def section(cls: type) -> Any:
    """A nested settings dataclass, loaded from the same environment."""
    return field(default_factory=cls, metadata={"section": cls})


def setting(default: Any, env: str | None, parse: Parser | None, doc: str, *, secret: bool = False) -> Any:
    """A dataclass field whose env var, parser and doc travel with its default (a secret is never in a repr)."""
    kwargs: dict[str, Any] = (
        {"default_factory": default} if callable(default) and not isinstance(default, type) else {"default": default}
    )
    return field(metadata={"setting": Setting(env, parse, doc)}, repr=not secret, **kwargs)


def choice(*allowed: str) -> Parser:
    """One of `allowed`, in any case; returned as `allowed` spells it."""
    spelled = {value.lower(): value for value in allowed}

    def parse(raw: str, name: str) -> str:
        value = spelled.get(raw.strip().lower())
        if value is None:
            raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def readable_file(raw: str, name: str) -> Path:
    file = Path(raw.strip()).expanduser()
    if not file.is_file():
        raise ConfigError(f"{name}: {str(file)!r} is not a readable file")
    return file


# --- parsers ---------------------------------------------------------------------------------


def integer(minimum: int = 1, maximum: int = 2**31 - 1) -> Parser:
    def parse(raw: str, name: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}: must be between {minimum} and {maximum}, got {value}")
        return value

    return parse


def seconds(minimum: float = 0.001, maximum: float = 10 * 365 * 24 * 3600.0) -> Parser:
    """A finite duration in seconds: `nan`, `inf` and `1e309` are refused, not silently accepted."""

    def parse(raw: str, name: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name}: {raw!r} is not a finite number of seconds")
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}: must be between {minimum:g} and {maximum:g} seconds, got {value:g}")
        return value

    return parse


def text(raw: str, name: str) -> str:
    return raw.strip()


def boolean(raw: str, name: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (use true or false)")


_KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def kafka_name(raw: str, name: str) -> str:
    raw = raw.strip()
    if not _KAFKA_NAME.match(raw):
        raise ConfigError(f"{name}: {raw!r} is not a valid Kafka name (letters, digits, '.', '_', '-')")
    return raw


def bootstrap_servers(raw: str, name: str) -> str:
    servers = [server.strip() for server in raw.split(",")]
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"{name}: {server!r} is not host:port")
    return ",".join(servers)


def path(raw: str, name: str) -> Path:
    return Path(raw.strip()).expanduser()


MIN_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits)."""


def secrets_list(raw: str, name: str) -> tuple[str, ...]:
    """Comma-separated signing secrets, current first; the message never repeats a secret."""
    secrets = tuple(part.strip() for part in raw.split(","))
    for position, secret in enumerate(secrets, 1):
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{name}: secret #{position} is {len(secret.encode())} bytes; each needs at least {MIN_SECRET_BYTES} "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    return secrets


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\*$")


def origins(raw: str, name: str) -> tuple[str, ...]:
    """Comma-separated browser origins (scheme://host[:port], no path), or `*`."""
    found = tuple(part.strip() for part in raw.split(","))
    for origin in found:
        if not _ORIGIN.match(origin):
            raise ConfigError(f"{name}: {origin[:100]!r} is not an origin (scheme://host[:port], or *)")
    return found


def networks(raw: str, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP addresses or CIDR networks."""
    found = []
    for part in raw.split(","):
        try:
            found.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part.strip()[:100]!r} is not an IP address or network") from None
    return tuple(found)


_ACCEPTED_DB_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}


def normalise_db_url(raw: str, variable: str) -> str:
    """Turn a PostgreSQL URL into the SQLAlchemy psycopg 3 form, or raise ConfigError."""
    raw = raw.strip()
    try:
        url: URL = make_url(raw)
        port = url.port  # a non-numeric port raises ValueError here, not at connect time
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"{variable}: {_redacted(raw)!r} is not a database URL (expected postgresql://user:pass@host:port/dbname)"
        ) from None
    if url.drivername not in _ACCEPTED_DB_SCHEMES:
        raise ConfigError(
            f"{variable}: scheme {url.drivername!r} is not supported; hsepay runs on PostgreSQL only "
            "(postgresql://user:pass@host:port/dbname)"
        )
    if not url.database:
        raise ConfigError(f"{variable}: {_redacted(raw)!r} names no database (postgresql://host/dbname)")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{variable}: port {port} is out of range")
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _redacted(raw: str) -> str:
    """A URL as it may appear in an error line: never with its password."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", raw)


def database_url(raw: str, name: str) -> str:
    return normalise_db_url(raw, name)


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseSettings:
    payments_url: str | None = setting(
        None, "HSEPAY_PAYMENTS_DB", database_url, "PostgreSQL URL of the payments database; unset: embedded server"
    )
    orders_url: str | None = setting(
        None,
        "HSEPAY_ORDERS_DB",
        database_url,
        "PostgreSQL URL of the orders database (another database than payments); unset: embedded server",
    )
    pool_size: int = setting(10, "HSEPAY_DB_POOL_SIZE", integer(1, 1000), "connections per database and process")
    pool_timeout: float = setting(
        5.0,
        "HSEPAY_DB_POOL_TIMEOUT",
        seconds(0.1, 300),
        "seconds a request waits for a pooled connection before it is answered 503",
    )

    def url_of(self, variable: str) -> str | None:
        """The configured URL behind an env var (None: the embedded server); the registry names the variable."""
        for f in fields(self):
            if f.metadata["setting"].env == variable:
                return getattr(self, f.name)
        raise KeyError(variable)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str | None = setting(
        None, "HSEPAY_KAFKA", bootstrap_servers, "bootstrap servers, comma-separated; unset: embedded broker"
    )
    partitions: int = setting(6, "HSEPAY_KAFKA_PARTITIONS", integer(1, 10_000), "partitions of topics hsepay creates")
    replication_factor: int | None = setting(
        None,
        "HSEPAY_KAFKA_REPLICATION",
        integer(1, 32),
        "replication factor of topics hsepay creates; unset: min(3, brokers in the cluster)",
    )
    min_insync_replicas: int | None = setting(
        None,
        "HSEPAY_KAFKA_MIN_INSYNC",
        integer(1, 32),
        "min.insync.replicas of topics hsepay creates; unset: 2 when the replication factor is 3 or more",
    )
    idempotence: bool | None = setting(
        None,
        "HSEPAY_KAFKA_IDEMPOTENCE",
        boolean,
        "idempotent producers; unset: on, except for a broker that refuses InitProducerId (Tansu), with a warning",
    )
    delivery_timeout: float = setting(
        30.0,
        "HSEPAY_KAFKA_DELIVERY_TIMEOUT",
        seconds(1, 600),
        "seconds a published batch may wait for its acks before its producer is replaced and the rest re-sent",
    )
    orders_topic: str = setting("orders", "HSEPAY_ORDERS_TOPIC", kafka_name, "topic of payment requests")
    payment_status_topic: str = setting(
        "payment-status", "HSEPAY_PAYMENT_STATUS_TOPIC", kafka_name, "topic of payment results"
    )
    group_prefix: str = setting(
        "hsepay", "HSEPAY_GROUP_PREFIX", kafka_name, "consumer groups are <prefix>-payments and <prefix>-orders"
    )
    security_protocol: str = setting(
        "PLAINTEXT",
        "HSEPAY_KAFKA_SECURITY_PROTOCOL",
        choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "how clients reach the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    )
    sasl_mechanism: str = setting(
        "SCRAM-SHA-512",
        "HSEPAY_KAFKA_SASL_MECHANISM",
        choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        "SASL mechanism for the SASL_* protocols",
    )
    sasl_username: str | None = setting(None, "HSEPAY_KAFKA_SASL_USERNAME", text, "SASL user name")
    sasl_password: str | None = setting(
        None, "HSEPAY_KAFKA_SASL_PASSWORD", text, "SASL password (never logged)", secret=True
    )
    ssl_cafile: Path | None = setting(
        None, "HSEPAY_KAFKA_SSL_CAFILE", readable_file, "CA bundle that signed the brokers' certificates (SSL_*)"
    )
    ssl_certfile: Path | None = setting(
        None, "HSEPAY_KAFKA_SSL_CERTFILE", readable_file, "client certificate, for brokers that require one"
    )
    ssl_keyfile: Path | None = setting(None, "HSEPAY_KAFKA_SSL_KEYFILE", readable_file, "the client certificate's key")

    def security_options(self) -> dict[str, Any]:
        """aiokafka client options for the chosen protocol; ConfigError if a needed setting is missing."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL_"):
            if not (self.sasl_username and self.sasl_password):
                raise ConfigError(
                    f"HSEPAY_KAFKA_SASL_USERNAME and HSEPAY_KAFKA_SASL_PASSWORD are needed with "
                    f"HSEPAY_KAFKA_SECURITY_PROTOCOL={self.security_protocol}"
                )
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
                certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
            )
        return options


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = setting(1000, "HSEPAY_RELAY_BATCH", integer(1, 100_000), "outbox rows published per round")
    poll_interval: float = setting(
        1.0, "HSEPAY_RELAY_POLL", seconds(0.01, 60), "seconds between polls when no NOTIFY arrives (a fallback)"
    )
    retention: float = setting(
        300.0, "HSEPAY_OUTBOX_RETENTION", seconds(), "seconds a sent outbox row is kept before it is purged"
    )
    purge_interval: float = setting(
        30.0, "HSEPAY_OUTBOX_PURGE_INTERVAL", seconds(0.1), "seconds between purges of sent outbox rows"
    )
    standby_interval: float = setting(
        1.0, "HSEPAY_RELAY_STANDBY_INTERVAL", seconds(0.01, 60), "seconds a standby relay waits between lock attempts"
    )
    lease: float = setting(
        10.0,
        "HSEPAY_RELAY_LEASE",
        seconds(2, 3600),
        "seconds without a sign of life after which PostgreSQL ends the active relay's session (and its lock)",
    )


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = setting(
        500, "HSEPAY_CONSUMER_BATCH", integer(1, 100_000), "messages applied per inbox transaction at most"
    )
    max_attempts: int = setting(
        5, "HSEPAY_CONSUMER_MAX_ATTEMPTS", integer(1, 1000), "failures of one message before it is quarantined"
    )
    inbox_retention: float = setting(
        7 * 24 * 3600.0,
        "HSEPAY_INBOX_RETENTION",
        seconds(60),
        "seconds a processed inbox row is kept (older duplicates stay harmless: decisions are unique per order)",
    )
    purge_interval: float = setting(
        60.0, "HSEPAY_INBOX_PURGE_INTERVAL", seconds(0.1), "seconds between purges of old inbox rows"
    )


@dataclass(frozen=True)
class SagaSettings:
    redrive_after: float = setting(
        30.0,
        "HSEPAY_REDRIVE_AFTER",
        seconds(0.1),
        "seconds an order may stay `created` before its payment request is re-sent",
    )
    redrive_interval: float = setting(
        5.0, "HSEPAY_REDRIVE_INTERVAL", seconds(0.05, 3600), "seconds between scans for orders to re-drive"
    )
    max_backoff: float = setting(
        10.0, "HSEPAY_MAX_BACKOFF", seconds(0.1, 600), "upper bound of every retry backoff after a failure"
    )
    startup_wait: float = setting(
        60.0,
        "HSEPAY_STARTUP_WAIT",
        seconds(0, 3600),
        "seconds a long-running role (serve, relay, consume) waits for an unreachable database at start",
    )


@dataclass(frozen=True)
class ApiSettings:
    workers: int = setting(
        1, "HSEPAY_API_WORKERS", integer(1, 64), "worker processes of `hsepay serve` (--workers overrides)"
    )
    idempotency_ttl: float = setting(
        24 * 3600.0, "HSEPAY_IDEMPOTENCY_TTL", seconds(1), "seconds an Idempotency-Key is remembered"
    )
    purge_interval: float = setting(
        600.0, "HSEPAY_IDEMPOTENCY_PURGE_INTERVAL", seconds(0.1), "seconds between purges of expired keys"
    )


def url(raw: str, name: str) -> str:
    raw = raw.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", raw):
        raise ConfigError(f"{name}: {raw!r} is not an http(s)://host:port URL")
    return raw


@dataclass(frozen=True)
class GatewaySettings:
    payments_url: str = setting(
        "http://127.0.0.1:8080", "HSEPAY_GATEWAY_PAYMENTS_URL", url, "the payments API the gateway forwards to"
    )
    orders_url: str = setting(
        "http://127.0.0.1:8081", "HSEPAY_GATEWAY_ORDERS_URL", url, "the orders API the gateway forwards to"
    )
    timeout: float = setting(
        5.0, "HSEPAY_GATEWAY_TIMEOUT", seconds(0.05, 300), "seconds the gateway waits for an upstream answer (then 504)"
    )


@dataclass(frozen=True)
class ObservabilitySettings:
    log_level: str = setting(
        "info", "HSEPAY_LOG_LEVEL", choice("debug", "info", "warning", "error"), "level of hsepay's own log lines"
    )
    log_format: str = setting(
        "auto",
        "HSEPAY_LOG_FORMAT",
        choice("auto", "json", "console"),
        "json (one object per line), console (Rich), or auto: console on a terminal, json otherwise",
    )
    metrics_port: int | None = setting(
        None,
        "HSEPAY_METRICS_PORT",
        integer(1, 65535),
        "port of /metrics and /health/* of relay and consume processes (--metrics-port); unset: none",
    )
    tracing: bool | None = setting(
        None,
        "HSEPAY_TRACING",
        boolean,
        "OpenTelemetry tracing (pip install hsepay[tracing]); unset: on when OTEL_EXPORTER_OTLP_ENDPOINT is set",
    )


@dataclass(frozen=True)
class SecuritySettings:
    """Who may call the APIs and how much (docs/SECURITY.md)."""

    auth_secrets: tuple[str, ...] = setting(
        (),
        "HSEPAY_AUTH_SECRET",
        secrets_list,
        "HS256 secret(s) for bearer tokens, comma-separated: new tokens use the first, any verifies "
        "(rotation); each ≥ 32 bytes; unset: auth off (development only)",
        secret=True,
    )
    self_deposit: bool = setting(
        False, "HSEPAY_AUTH_SELF_DEPOSIT", boolean, "let a user token deposit into its own account (demos)"
    )
    cors_origins: tuple[str, ...] = setting(
        (), "HSEPAY_CORS_ORIGINS", origins, "browser origins allowed to call the APIs, comma-separated; unset: CORS off"
    )
    rate_limit: int = setting(
        100,
        "HSEPAY_RATE_LIMIT",
        integer(0, 10_000_000),
        "requests per second per caller (token subject, else client IP) and process; 0: no limit",
    )
    rate_burst: int | None = setting(
        None, "HSEPAY_RATE_BURST", integer(1, 10_000_000), "requests a caller may send at once; unset: 2 × the rate"
    )
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        (),
        "HSEPAY_TRUSTED_PROXIES",
        networks,
        "proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-For names the client; unset: trust none",
    )
    request_timeout: float = setting(
        10.0,
        "HSEPAY_REQUEST_TIMEOUT",
        seconds(0.05, 3600),
        "seconds a request may take before it is answered 503 (408 while its body is still arriving)",
    )

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_secrets)


@dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(lambda: Path(".hsepay"), "HSEPAY_DATA_DIR", path, "files of the embedded engines")
    db: DatabaseSettings = section(DatabaseSettings)
    kafka: KafkaSettings = section(KafkaSettings)
    relay: RelaySettings = section(RelaySettings)
    consumer: ConsumerSettings = section(ConsumerSettings)
    saga: SagaSettings = section(SagaSettings)
    api: ApiSettings = section(ApiSettings)
    security: SecuritySettings = section(SecuritySettings)
    gateway: GatewaySettings = section(GatewaySettings)
    observability: ObservabilitySettings = section(ObservabilitySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from `env` (default: the process environment)."""
        return _load(cls, os.environ if env is None else env)

    @classmethod
    def documented(cls) -> list[tuple[str, Any, str]]:
        """(variable, default, doc) of every setting, in declaration order."""
        return [(s.env, default, s.doc) for s, default in _walk(cls) if s.env]

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)


def _load(cls: type, env: Mapping[str, str]) -> Any:
    values: dict[str, Any] = {}
    for f in fields(cls):
        if "section" in f.metadata:
            values[f.name] = _load(f.metadata["section"], env)
            continue
        spec: Setting = f.metadata["setting"]
        raw = env.get(spec.env) if spec.env else None
        if raw is None or not raw.strip():
            continue
        values[f.name] = spec.parse(raw, spec.env) if spec.parse else raw
    return cls(**values)


def _walk(cls: type) -> Iterator[tuple[Setting, Any]]:
    for f in fields(cls):
        if "section" in f.metadata:
            yield from _walk(f.metadata["section"])
        else:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            yield f.metadata["setting"], default


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
