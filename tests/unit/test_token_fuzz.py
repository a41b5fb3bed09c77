"""Whatever a bearer token holds, verifying it gives a Principal or an InvalidToken, never another
exception (which the API would answer with a 500): a corpus of odd JOSE headers, claims and
spellings, then generated headers and claims (hypothesis), each validly signed so that every check
past the signature is reached too."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsepay.auth import InvalidToken, Principal, TokenVerifier
from tests.tokens import SECRET, claims, issue

USER = uuid.uuid4()
verifier = TokenVerifier([SECRET], max_ttl=24 * 3600)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: Any, payload: Any, *, raw_header: bytes | None = None, raw_payload: bytes | None = None) -> str:
    """A compact JWS over any header and payload (JSON or raw bytes), with a valid HS256 signature."""
    head = _b64(raw_header if raw_header is not None else json.dumps(header).encode())
    body = _b64(raw_payload if raw_payload is not None else json.dumps(payload).encode())
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def outcome(token: str) -> Principal | str:
    """The verifier's answer: a Principal, or the InvalidToken's message; anything else fails the test."""
    try:
        return verifier.verify(token)
    except InvalidToken as exc:
        return str(exc)


def _stray_bits(token: str) -> str:
    """The same token with one of the two unused low bits of its last base64 character set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    assert last & 0b11 == 0  # canonical: the unused bits are zero
    return token[:-1] + alphabet[last | 0b01]


HS256 = {"alg": "HS256", "typ": "JWT"}
GOOD = claims(USER)
NESTED = "[" * 100_000 + "]" * 100_000

HEADERS = [
    {**HS256, "crit": ["exp"]},
    {**HS256, "crit": "b64"},
    {**HS256, "crit": []},
    {**HS256, "kid": 5},
    {**HS256, "kid": None},
    {**HS256, "kid": {"a": 1}},
    {**HS256, "kid": ["k"]},
    {**HS256, "typ": 7},
    {**HS256, "cty": []},
    {**HS256, "b64": False},  # RFC 7797's unencoded payload: not what hsepay signs
    {"alg": None},
    {"alg": 256},
    {"alg": ["HS256"]},
    {"alg": "hs256"},
    {"alg": "HS256 "},
    {},
    [],
    "HS256",
    42,
    None,
]
CLAIMS = [
    {**GOOD, "exp": "tomorrow"},
    {**GOOD, "exp": 1e308},
    {**GOOD, "exp": 10**400},
    {**GOOD, "exp": -(10**400)},
    {**GOOD, "exp": True},
    {**GOOD, "exp": None},
    {**GOOD, "exp": [1]},
    {**GOOD, "iat": "now"},
    {**GOOD, "iat": 10**400},
    {**GOOD, "iat": int(time.time()) + 3600},
    {**GOOD, "iat": 0},  # lives since 1970: longer than any maximum
    {**GOOD, "nbf": "soon"},
    {**GOOD, "nbf": 10**400},
    {**GOOD, "sub": ["a"]},
    {**GOOD, "sub": {"id": str(USER)}},
    {**GOOD, "sub": 10**400},
    {**GOOD, "role": ["operator"]},
    {**GOOD, "role": {"operator": True}},
    {**GOOD, "role": 1},
    {**GOOD, "aud": 5},
    {**GOOD, "aud": [5, None]},
    {**GOOD, "aud": {"hsepay-api": 1}},
    {**GOOD, "iss": ["hsepay"]},
    {**GOOD, "iss": 1},
    {**GOOD, "jti": {"x": []}},
    [],
    "claims",
    None,
    17,
]


@pytest.mark.parametrize("header", HEADERS, ids=repr)
def test_odd_headers_are_refused_with_a_reason(header):
    assert isinstance(outcome(signed(header, GOOD)), str)


@pytest.mark.parametrize(
    "header",
    [
        {**HS256, "jku": "http://evil.example/keys"},
        {**HS256, "jwk": {"kty": "oct", "k": "AAAA"}},
        {**HS256, "x5c": ["MII"]},
    ],
    ids=repr,
)
def test_key_hints_are_ignored_the_key_is_always_our_secret(header):
    """Never fetched or used: a token signed with our secret verifies, one signed with the hinted key not."""
    assert outcome(signed(header, GOOD)) == Principal(USER, "user")


@pytest.mark.parametrize("payload", CLAIMS, ids=lambda c: repr(c)[:60])
def test_odd_claims_are_refused_with_a_reason(payload):
    assert isinstance(outcome(signed(HS256, payload)), str)


@pytest.mark.parametrize(
    "token",
    [
        signed(None, None, raw_header=b"not json", raw_payload=json.dumps(GOOD).encode()),
        signed(None, None, raw_header=NESTED.encode(), raw_payload=json.dumps(GOOD).encode()),
        signed(HS256, None, raw_payload=NESTED.encode()),
        signed(HS256, None, raw_payload=b"\xff\xfe"),
        signed(HS256, None, raw_payload=b'{"sub": 1, "sub": 2}'),
        signed(None, None, raw_header=b'{"alg": "HS256", "alg": "none"}', raw_payload=json.dumps(GOOD).encode()),
        issue(USER) + "=",  # padding: a second spelling of the same signature
        issue(USER) + "==",
        _stray_bits(issue(USER)),
        issue(USER) + ".extra",
        ".".join(issue(USER).split(".")[:2]),
        issue(USER).replace(".", "..", 1),
        " " + issue(USER),
        issue(USER) + "\x00",
        issue(USER)[:-2] + "+/",  # standard base64's characters, not base64url's
        "é." * 3,
        "a" * 100_000,
        "..",
        "...",
    ],
    ids=lambda t: repr(t)[:40],
)
def test_odd_spellings_are_refused_with_a_reason(token):
    assert isinstance(outcome(token), str)


def test_stray_bits_spell_the_same_signature():
    token = issue(USER)
    assert base64.urlsafe_b64decode(_stray_bits(token).split(".")[2] + "=") == base64.urlsafe_b64decode(
        token.split(".")[2] + "="
    )


def test_a_long_lived_token_is_refused_even_with_a_valid_signature():
    now = int(time.time())
    assert "longer" in outcome(signed(HS256, {**GOOD, "iat": now, "exp": now + 24 * 3600 + 1}))
    assert outcome(signed(HS256, {**GOOD, "iat": now, "exp": now + 24 * 3600})) == Principal(USER, "user")


def test_the_canonical_token_still_verifies():
    assert outcome(issue(USER)) == Principal(USER, "user")


# --- generated ------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
header_names = st.sampled_from(["alg", "typ", "kid", "crit", "cty", "jku", "jwk", "x5u", "x5c", "b64", "zip", "enc"])
claim_names = st.sampled_from(["sub", "role", "iss", "aud", "iat", "nbf", "exp", "jti"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.dictionaries(header_names | st.text(max_size=6), json_values, max_size=4))
def test_generated_jose_headers_never_escape_as_another_exception(extra):
    outcome(signed({**HS256, **extra}, GOOD))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(claim_names | st.text(max_size=6), json_values, max_size=4))
def test_generated_claims_never_escape_as_another_exception(changes):
    answer = outcome(signed(HS256, {**GOOD, **changes}))
    if isinstance(answer, Principal):  # only what a valid token says can get through
        assert answer.subject == uuid.UUID(str({**GOOD, **changes}["sub"]))


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=300))
def test_generated_strings_never_escape_as_another_exception(token):
    assert isinstance(outcome(token), str)
