"""Bearer tokens (hsepay.auth): what verifies, what does not and why, and who may act for whom."""

from __future__ import annotations

import time
import timeit
import uuid

import pytest

from hsepay.auth import EVERYONE, InvalidToken, Principal, TokenIssuer, TokenVerifier
from hsepay.errors import Forbidden
from tests.tokens import OTHER_SECRET, PREVIOUS_SECRET, SECRET, claims, forge, issue

USER = uuid.uuid4()
verifier = TokenVerifier([SECRET])


def test_an_issued_token_verifies_to_its_subject_and_role():
    assert verifier.verify(issue(USER)) == Principal(USER, "user")
    assert verifier.verify(issue(USER, "operator")) == Principal(USER, "operator")


def test_rotation_signs_with_the_first_secret_and_verifies_with_each():
    rotated = TokenVerifier([SECRET, PREVIOUS_SECRET])
    assert rotated.verify(issue(USER, secret=PREVIOUS_SECRET)).subject == USER  # issued before the rotation
    token, _ = TokenIssuer([SECRET, PREVIOUS_SECRET]).issue(USER, "user", 60)
    assert verifier.verify(token).subject == USER  # new tokens: the current secret
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(issue(USER, secret=PREVIOUS_SECRET))  # once the old secret is dropped


@pytest.mark.parametrize(
    "token, reason",
    [
        (forge(claims(USER), alg="none"), "algorithm 'none'"),
        (forge(claims(USER), alg="HS512"), "algorithm 'HS512'"),
        (forge(claims(USER), alg="RS256"), "algorithm 'RS256'"),
        (forge(claims(USER), secret=OTHER_SECRET), "signature"),
        (forge(claims(USER, exp=int(time.time()) - 60)), "expired"),
        (forge(claims(USER, nbf=int(time.time()) + 3600)), "not valid yet"),
        (forge(claims(USER, iss="someone-else")), "issuer"),
        (forge(claims(USER, aud="another-api")), "audience"),
        (forge(claims(USER, exp=None)), "'exp'"),
        (forge(claims(USER, sub=None)), "'sub'"),
        (forge(claims(USER, aud=None)), "'aud'"),
        (forge(claims("urn:uuid:" + str(USER))), "subject"),
        (forge(claims("admin")), "subject"),
        (forge(claims(USER, role="admin")), "role"),
        (forge(claims(USER, role=None)), "role"),
        (forge(claims(USER, sub=42)), "malformed"),
        ("not-a-jwt", "not a JWT"),
        ("a.b.c", "not a JWT"),
        ("", "not a JWT"),
    ],
    ids=lambda value: value[:20] if isinstance(value, str) else None,
)
def test_refused_tokens_say_why(token, reason):
    with pytest.raises(InvalidToken, match=reason):
        verifier.verify(token)


def test_a_little_clock_skew_is_tolerated():
    assert verifier.verify(forge(claims(USER, exp=int(time.time()) - 2))).subject == USER


def test_a_user_acts_only_for_itself_an_operator_for_anyone():
    other = uuid.uuid4()
    user, operator = Principal(USER, "user"), Principal(USER, "operator")
    assert user.may_act_for(USER) and not user.may_act_for(other)
    assert operator.may_act_for(other) and EVERYONE.may_act_for(other)
    with pytest.raises(Forbidden):
        user.require_self(other, "place orders")
    user.require_self(USER, "place orders")


def test_verifying_a_token_costs_tens_of_microseconds():
    token = issue(USER)
    runs = 2000
    seconds = min(timeit.repeat(lambda: verifier.verify(token), number=runs, repeat=3)) / runs
    print(f"\nHS256 verify: {seconds * 1e6:.1f} µs per token")
    assert seconds < 1e-3  # a generous bound for a shared box; the figure is what docs/SECURITY.md quotes
