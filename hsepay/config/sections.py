"""The settings, one dataclass per concern; every field says its variable, default and meaning.

(Over 300 lines: each dataclass is mostly its fields' help text, and together they are the one
table the README's configuration section is generated from.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hsepay.config.parsing import (
    ConfigError,
    boolean,
    bootstrap_servers,
    choice,
    database_url,
    integer,
    kafka_name,
    networks,
    origins,
    readable_file,
    repr_masking_urls,
    seconds,
    secrets_list,
    setting,
    text,
    url,
)
from hsepay.connection_policy import ConnectionPolicy


@dataclass(frozen=True, repr=False)
class DatabaseSettings:
    payments_url: str | None = setting(
        None,
        "HSEPAY_PAYMENTS_DB",
        database_url,
        "PostgreSQL URL of the payments database (any URL or conninfo libpq accepts, several hosts included); "
        "unset: embedded server",
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
    connect_timeout: float = setting(
        2.0,
        "HSEPAY_DB_CONNECT_TIMEOUT",
        seconds(2, 300),
        "seconds a new connection may take (libpq's connect_timeout, ≥ 2)",
    )
    statement_timeout: float = setting(
        3.0,
        "HSEPAY_DB_STATEMENT_TIMEOUT",
        seconds(0, 24 * 3600),
        "seconds a statement may run (the server's statement_timeout, sent by hsepay); the client calls a "
        "connection dead when an answer is 1 s later than that; 0: unbounded (one-off commands on huge databases)",
    )
    lock_timeout: float = setting(
        2.0, "HSEPAY_DB_LOCK_TIMEOUT", seconds(0, 3600), "seconds a statement may wait for a lock (0: unbounded)"
    )
    idle_in_transaction_timeout: float = setting(
        5.0,
        "HSEPAY_DB_IDLE_IN_TRANSACTION_TIMEOUT",
        seconds(0, 3600),
        "seconds a session may sit idle inside a transaction before the server ends it, releasing its locks",
    )
    dead_after: float = setting(
        4.0,
        "HSEPAY_DB_DEAD_AFTER",
        seconds(2, 3600),
        "seconds after which a connection whose peer went silent is dropped (TCP keepalive and "
        "tcp_user_timeout, on both ends)",
    )

    def policy(self) -> ConnectionPolicy:
        """What every database connection of a process follows (hsepay.connections)."""
        return ConnectionPolicy(
            connect_timeout=self.connect_timeout,
            statement_timeout=self.statement_timeout,
            lock_timeout=self.lock_timeout,
            idle_in_transaction_timeout=self.idle_in_transaction_timeout,
            dead_after=self.dead_after,
        )

    __repr__ = repr_masking_urls

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

    def group_of(self, service: str) -> str:
        """The consumer group of a service's inbox consumers."""
        return f"{self.group_prefix}-{service}"

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
class EventSettings:
    """Proof of origin of events (docs/SECURITY.md, "Event signatures")."""

    orders_secrets: tuple[str, ...] = setting(
        (),
        "HSEPAY_ORDERS_EVENT_SECRET",
        secrets_list,
        "HMAC secret(s) of the orders service's events, comma-separated: its relay signs with the first, "
        "the payments consumer accepts any (rotation); each ≥ 32 bytes; unset: generated under "
        "HSEPAY_DATA_DIR on the embedded broker, required on any other",
        secret=True,
    )
    payments_secrets: tuple[str, ...] = setting(
        (),
        "HSEPAY_PAYMENTS_EVENT_SECRET",
        secrets_list,
        "HMAC secret(s) of the payments service's events (as HSEPAY_ORDERS_EVENT_SECRET, for payment results)",
        secret=True,
    )
    allow_unsigned: bool = setting(
        False,
        "HSEPAY_EVENTS_ALLOW_UNSIGNED",
        boolean,
        "accept events without a signature (a migration from unsigned producers only; a wrong signature is "
        "still refused); a warning at every start",
    )

    @staticmethod
    def variable_of(service: str) -> str:
        return f"HSEPAY_{service.upper()}_EVENT_SECRET"

    def secrets_of(self, service: str) -> tuple[str, ...]:
        """The configured secrets of a producing service (empty: none configured)."""
        variable = self.variable_of(service)
        for f in fields(self):
            if f.metadata["setting"].env == variable:
                return getattr(self, f.name)
        raise KeyError(variable)


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
    static_membership: bool = setting(
        True,
        "HSEPAY_CONSUMER_STATIC",
        boolean,
        "static group membership (group.instance.id): a restarted consumer takes its partitions back at "
        "once; a stopped one holds them for the session timeout (10 s)",
    )
    instance_id: str | None = setting(
        None,
        "HSEPAY_CONSUMER_INSTANCE_ID",
        text,
        "this consumer's group.instance.id, unique in its group and kept across restarts; unset: "
        "<group>@<host>#<slot>, the lowest slot free on this host",
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
    redrive_batch: int = setting(
        500, "HSEPAY_REDRIVE_BATCH", integer(1, 100_000), "payment requests one re-drive scan re-sends at most"
    )
    redrive_max_pause: float = setting(
        60.0,
        "HSEPAY_REDRIVE_MAX_PAUSE",
        seconds(0.1, 24 * 3600),
        "longest pause of the re-drive while none of the orders it last re-sent gets an answer",
    )
    # 2 s, not 10: a relay or consumer that waited out a failover retried every 6.4-10 s by then, and
    # came back 3-4 s after the new primary (issue 22, kill -9 of the leader): orders settle again
    # within 5 s of a new primary only if every worker retries at least every 2 s.
    max_backoff: float = setting(
        2.0, "HSEPAY_MAX_BACKOFF", seconds(0.1, 600), "upper bound of every retry backoff after a failure"
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
    db_timeout: float = setting(
        5.0,
        "HSEPAY_API_DB_TIMEOUT",
        seconds(0.05, 600),
        "seconds the database part of a request may take in all (queue, connection, statements, commit); "
        "then 503, and nothing was applied",
    )
    db_silence: float = setting(
        0.6,
        "HSEPAY_API_DB_SILENCE",
        seconds(0.05, 600),
        "seconds an API waits for one answer from its database before it asks whether the database is "
        "alive (a probe, bounded alike); a silent one: connections dropped, 503 at once until it answers",
    )
    queue: int = setting(
        1024,
        "HSEPAY_API_QUEUE",
        integer(1, 1_000_000),
        "orders that may wait for the group commit per process; more are answered 503 at once",
    )


@dataclass(frozen=True, repr=False)
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

    __repr__ = repr_masking_urls


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
    auth_max_ttl: float = setting(
        30 * 24 * 3600.0,
        "HSEPAY_AUTH_MAX_TTL",
        seconds(60, 366 * 24 * 3600),
        "longest token lifetime (exp - iat) the APIs accept and `hsepay token issue --ttl` issues",
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
    header_timeout: float = setting(
        30.0,
        "HSEPAY_HEADER_TIMEOUT",
        seconds(1, 3600),
        "seconds a client may take to send a request's headers, and may leave a kept-alive connection idle",
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
