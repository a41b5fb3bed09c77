"""Event signatures (hsepay.relay.signing) and where their secrets come from (hsepay.bootstrap.event_secrets)."""

from __future__ import annotations

import dataclasses
import stat
import uuid

import pytest

from hsepay.bootstrap import event_secrets
from hsepay.config import ConfigError, Settings
from hsepay.relay.envelope import new_message
from hsepay.relay.inbound import Message, Poison, Ready, decode
from hsepay.relay.signing import SIGNATURE_HEADER, EventSigner, EventVerifier, ProducerKeys

ORDERS_SECRET = b"o" * 32
PAYMENTS_SECRET = b"p" * 32
NOW = 1_800_000_000.0
WEEK = 7 * 24 * 3600.0


def _verifier(*secrets: bytes, allow_unsigned: bool = False, now: float = NOW) -> EventVerifier:
    keys = {"orders": ProducerKeys("orders", secrets or (ORDERS_SECRET,), "HSEPAY_ORDERS_EVENT_SECRET")}
    return EventVerifier(keys, max_age=WEEK, allow_unsigned=allow_unsigned, clock=lambda: now)


def _outgoing(topic: str = "orders", causation: str | None = None):
    return new_message(
        topic=topic,
        key=str(uuid.uuid4()),
        event_type="order.created",
        data={"order_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "amount": 40},
        correlation_id=str(uuid.uuid4()),
        causation_id=causation,
    )


def _signed(secret: bytes = ORDERS_SECRET, *, at: float = NOW, producer: str = "orders", topic: str = "orders"):
    """A message as the consumer receives it from the orders relay."""
    out = _outgoing(topic)
    signature = EventSigner(producer, secret, clock=lambda: at).sign(
        out.topic, out.key.encode(), out.value, out.headers
    )
    return Message(out.topic, 0, 7, out.key, out.value, {**out.headers, SIGNATURE_HEADER: signature})


def test_what_the_relay_signs_verifies():
    assert _verifier().verify(_signed()) is None


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: dataclasses.replace(m, value=m.value.replace(b"40", b"41")), id="value"),
        pytest.param(lambda m: dataclasses.replace(m, key=str(uuid.uuid4())), id="key"),
        pytest.param(lambda m: dataclasses.replace(m, key=None), id="no-key"),
        pytest.param(lambda m: dataclasses.replace(m, topic="orders-copy"), id="topic"),
        pytest.param(lambda m: _header(m, "event_type", "payment.succeeded"), id="event_type-header"),
        pytest.param(lambda m: _header(m, "event_id", str(uuid.uuid4())), id="event_id-header"),
        pytest.param(lambda m: _header(m, "correlation_id", str(uuid.uuid4())), id="correlation_id-header"),
        pytest.param(lambda m: _header(m, "causation_id", str(uuid.uuid4())), id="causation_id-added"),
        pytest.param(lambda m: _header(m, "event_type", None), id="event_type-removed"),
        pytest.param(lambda m: _header(m, "event_type", ""), id="event_type-emptied"),
        pytest.param(lambda m: _signature(m, lambda t, mac: (t + 1, mac)), id="signing-time"),
        pytest.param(
            lambda m: _signature(m, lambda t, mac: (t, mac[:-1] + ("A" if mac[-1] != "A" else "B"))), id="mac"
        ),
    ],
)
def test_any_change_to_a_signed_field_is_refused(tamper):
    message = tamper(_signed())
    verifier = _verifier()
    verifier.producers = {**verifier.producers, "orders-copy": verifier.producers["orders"]}
    assert "does not verify" in verifier.verify(message)


def _header(message: Message, name: str, value: str | None) -> Message:
    headers = {k: v for k, v in message.headers.items() if k != name}
    if value is not None:
        headers[name] = value
    return dataclasses.replace(message, headers=headers)


def _signature(message: Message, change) -> Message:
    t, _, mac = message.headers[SIGNATURE_HEADER].partition(",v1=")
    new_t, new_mac = change(int(t.removeprefix("t=")), mac)
    return _header(message, SIGNATURE_HEADER, f"t={new_t},v1={new_mac}")


def test_headers_that_are_not_signed_may_change():
    assert _verifier().verify(_header(_signed(), "traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")) is None


def test_unsigned_is_refused_and_allowed_only_for_a_migration():
    unsigned = _header(_signed(), SIGNATURE_HEADER, None)
    assert "unsigned" in _verifier().verify(unsigned)
    assert _verifier(allow_unsigned=True).verify(unsigned) is None
    forged = _signed(b"x" * 32)
    assert "does not verify" in _verifier(allow_unsigned=True).verify(forged)  # a wrong one never passes


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t=1,v1=",
        "v1=AAAA,t=1",
        "t=-5,v1=" + "A" * 43,
        "t=1,v1=" + "A" * 43 + "=",  # padding: a second spelling of the same MAC
        "t=1,v1=" + "A" * 44,
        " t=1,v1=" + "A" * 43,
        "t=1,v1=" + "A" * 42 + "+",
        "t=1,v1=" + "A" * 43 + ",v1=" + "A" * 43,
        "t=99999999999999999999,v1=" + "A" * 43,
    ],
)
def test_malformed_signature_headers_are_refused(header):
    assert "malformed" in _verifier().verify(_header(_signed(), SIGNATURE_HEADER, header))


def test_secrets_rotate_sign_with_the_first_verify_with_any():
    old, new = b"1" * 32, b"2" * 32
    assert _verifier(new, old).verify(_signed(old)) is None
    assert _verifier(new, old).verify(_signed(new)) is None
    assert "does not verify" in _verifier(new).verify(_signed(old))


def test_another_services_secret_does_not_sign_this_topic():
    """The key is chosen by topic: the payments service cannot publish order.created with its own secret,
    nor can a record claim to come from another producer."""
    assert "does not verify" in _verifier().verify(_signed(PAYMENTS_SECRET, producer="payments"))
    assert "does not verify" in _verifier().verify(_signed(ORDERS_SECRET, producer="payments"))
    assert "no producer is known" in _verifier().verify(_signed(topic="elsewhere"))


def test_a_signature_older_than_the_inbox_remembers_is_a_replay():
    assert _verifier().verify(_signed(at=NOW - WEEK + 60)) is None
    refusal = _verifier().verify(_signed(at=NOW - WEEK - 60))
    assert refusal.startswith("refused as a replay: signed 7.0 d ago")
    assert "HSEPAY_INBOX_RETENTION" in refusal
    # judged as of its arrival when it is retried from quarantine later
    assert _verifier(now=NOW + WEEK).verify(_signed(at=NOW), now=NOW + 1) is None


def test_a_signature_from_the_future_is_refused_beyond_clock_skew():
    assert _verifier().verify(_signed(at=NOW + 60)) is None
    assert "in the future" in _verifier().verify(_signed(at=NOW + 3600))


def test_a_refused_message_is_poison_under_an_id_of_its_own_bytes_not_the_id_it_claims():
    forged = _signed(b"x" * 32)
    claimed = uuid.UUID(forged.headers["event_id"])
    item = decode(forged, {}, _verifier().verify)
    assert isinstance(item, Poison) and "does not verify" in item.error
    assert item.event_id != claimed  # a forgery cannot pre-empt the real event of that id
    assert decode(forged, {}, _verifier().verify).event_id == item.event_id  # a redelivery: same id


def test_decode_checks_the_signature_before_anything_else():
    from hsepay.payments.reactions import make_handlers

    handlers = make_handlers(payment_status_topic="payment-status")
    assert isinstance(decode(_signed(), handlers, _verifier().verify), Ready)
    assert isinstance(decode(_signed(b"x" * 32), handlers, _verifier().verify), Poison)


# --- where secrets come from ----------------------------------------------------------------------------


def test_embedded_broker_generates_one_private_secret_per_service(tmp_path):
    settings = Settings.from_env({"HSEPAY_DATA_DIR": str(tmp_path)})
    first = event_secrets.secrets_for(settings, "orders")
    assert first == event_secrets.secrets_for(settings, "orders")  # every process of this data dir agrees
    assert first != event_secrets.secrets_for(settings, "payments")
    assert len(first[0]) >= 32
    for path in tmp_path.glob("event-secret-*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["event-secret-orders", "event-secret-payments"]


def test_any_other_broker_needs_configured_secrets(tmp_path):
    env = {"HSEPAY_DATA_DIR": str(tmp_path), "HSEPAY_KAFKA": "kafka:9092"}
    with pytest.raises(ConfigError, match="^HSEPAY_ORDERS_EVENT_SECRET is not set"):
        event_secrets.secrets_for(Settings.from_env(env), "orders")
    assert not list(tmp_path.iterdir())  # no development secret is made for a shared broker
    assert (
        event_secrets.signer_for(Settings.from_env({**env, "HSEPAY_EVENTS_ALLOW_UNSIGNED": "true"}), "orders") is None
    )
    configured = Settings.from_env({**env, "HSEPAY_ORDERS_EVENT_SECRET": "n" * 32 + ", " + "o" * 32})
    assert event_secrets.secrets_for(configured, "orders") == ("n" * 32, "o" * 32)
    assert event_secrets.signer_for(configured, "orders").secret == b"n" * 32


def test_short_event_secrets_are_refused_without_repeating_them():
    with pytest.raises(ConfigError, match="HSEPAY_PAYMENTS_EVENT_SECRET: secret #1 is 5 bytes") as caught:
        Settings.from_env({"HSEPAY_PAYMENTS_EVENT_SECRET": "hunter"[:5]})
    assert "hunte" not in str(caught.value)


def test_event_secrets_are_not_in_the_settings_repr():
    settings = Settings.from_env({"HSEPAY_ORDERS_EVENT_SECRET": "s" * 40})
    assert "s" * 40 not in repr(settings)
