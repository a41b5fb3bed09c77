"""Proof of origin for events: each record carries an HMAC-SHA256 made with its producer's secret.

A broker is shared infrastructure: whoever may write to a topic (another team's service, a
connector, an operator's console) could otherwise publish a payment request or a payment result.
The relay of each service signs every record it publishes; the consumer verifies the record against
the secrets of the service that produces its topic — chosen by topic, never by anything the record
says about itself — before it decodes anything.

Header ``signature``: ``t=<unix milliseconds>,v1=<base64url HMAC-SHA256, no padding>``.
The MAC covers, each length-prefixed (so no two field lists encode alike): a version tag, the
producing service, the topic, the signing time, the record key, the DESIGN §4 headers
``event_type``, ``event_id``, ``correlation_id`` and ``causation_id`` (absent and empty differ), and
the value bytes. Swapping any of them, or moving a record to another topic, breaks the signature.
``traceparent`` is left out: tracing infrastructure may rewrite it.

Rotation, as for tokens: a service signs with the first of its secrets and a consumer accepts any
of them. Replays: a copy of an event is absorbed by the inbox while the inbox remembers its id (the
inbox retention); a record signed longer ago than that is refused as a replay, and so is one signed
too far in the future (it would outlive the window).

Generic: nothing here knows what an order or a payment is.
"""

from __future__ import annotations

import base64
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from hsepay.relay.inbound import Message

__all__ = [
    "SIGNATURE_HEADER",
    "EventSigner",
    "EventVerifier",
    "ProducerKeys",
    "signed_fields",
]

SIGNATURE_HEADER = "signature"
SIGNED_HEADERS = ("event_type", "event_id", "correlation_id", "causation_id")
VERSION_TAG = b"hsepay-event-v1"
MAX_SKEW_SECONDS = 300.0
"""How far in the future a signing time may lie (clocks of two hosts differ a little)."""

_SIGNATURE = re.compile(r"t=([0-9]{1,15}),v1=([A-Za-z0-9_-]{43})")
_ABSENT = b"-"


def signed_fields(
    producer: str, topic: str, signed_at_ms: int, key: bytes | None, headers: Mapping[str, str], value: bytes
) -> bytes:
    """The bytes a record's MAC is computed over (each field length-prefixed; `-` for an absent one)."""
    parts = [VERSION_TAG, producer.encode(), topic.encode(), b"%d" % signed_at_ms, key]
    for name in SIGNED_HEADERS:
        header = headers.get(name)
        parts.append(None if header is None else header.encode())
    parts.append(value)
    # A list, not a generator: this runs once per event on the relay's and the consumer's hot path.
    return b"".join([_ABSENT if part is None else b"%d:%b" % (len(part), part) for part in parts])


def _mac(secret: bytes, data: bytes) -> str:
    # hmac.digest is the one-shot C path (measured in docs/SECURITY.md: microseconds per event).
    return base64.urlsafe_b64encode(hmac.digest(secret, data, "sha256")).rstrip(b"=").decode()


@dataclass(frozen=True)
class EventSigner:
    """Signs the records one service publishes, with the first of its secrets."""

    producer: str
    secret: bytes
    clock: Callable[[], float] = time.time

    def sign(self, topic: str, key: bytes | None, value: bytes, headers: Mapping[str, str]) -> str:
        """The value of the `signature` header for this record."""
        signed_at = int(self.clock() * 1000)
        mac = _mac(self.secret, signed_fields(self.producer, topic, signed_at, key, headers, value))
        return f"t={signed_at},v1={mac}"


@dataclass(frozen=True)
class ProducerKeys:
    """The service that produces a topic, and the secrets its signatures may be made with."""

    producer: str
    secrets: Sequence[bytes]
    variable: str = ""
    """The setting that holds the secrets (named in refusals, so an operator knows where to look)."""


@dataclass
class EventVerifier:
    """Checks a consumed record's signature before anything else looks at it.

    `verify(message)` is None for an authentic, fresh record, or the reason it must be quarantined.
    """

    producers: Mapping[str, ProducerKeys]
    """topic -> who produces it and with which secrets."""
    max_age: float
    """Seconds a signature stays acceptable: the inbox retention (beyond it a copy is a replay)."""
    allow_unsigned: bool = False
    """Migration only: a record without a signature is accepted (a wrong one never is)."""
    clock: Callable[[], float] = field(default=time.time)

    def verify(self, message: Message, *, now: float | None = None) -> str | None:
        """The reason `message` is refused, or None. `now`: when it was received (a retry's check)."""
        keys = self.producers.get(message.topic)
        if keys is None:
            return f"refused: no producer is known for topic {message.topic!r}, so nothing can verify it"
        header = message.headers.get(SIGNATURE_HEADER)
        if header is None:
            if self.allow_unsigned:
                return None
            return (
                f"refused: unsigned (no {SIGNATURE_HEADER!r} header); events on {message.topic!r} must be "
                f"signed by the {keys.producer} service"
            )
        match = _SIGNATURE.fullmatch(header)
        if match is None:
            return f"refused: malformed {SIGNATURE_HEADER!r} header (expected t=<ms>,v1=<base64url HMAC-SHA256>)"
        signed_at, mac = int(match.group(1)), match.group(2)
        key = message.key.encode() if message.key is not None else None
        data = signed_fields(keys.producer, message.topic, signed_at, key, message.headers, message.value or b"")
        if not any(hmac.compare_digest(_mac(secret, data), mac) for secret in keys.secrets):
            where = f" ({keys.variable})" if keys.variable else ""
            return (
                f"refused: the signature does not verify with the {keys.producer} service's secrets{where}: "
                "forged, altered, moved from another topic, or signed with an unknown secret"
            )
        age = (self.clock() if now is None else now) - signed_at / 1000
        if age > self.max_age:
            return (
                f"refused as a replay: signed {_duration(age)} ago, beyond the {_duration(self.max_age)} "
                "the inbox remembers event ids (HSEPAY_INBOX_RETENTION)"
            )
        if age < -MAX_SKEW_SECONDS:
            return f"refused: signed {_duration(-age)} in the future (more than {MAX_SKEW_SECONDS:g} s of clock skew)"
        return None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"
