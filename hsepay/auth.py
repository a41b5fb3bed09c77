"""Bearer tokens: HS256 JWTs signed with HSEPAY_AUTH_SECRET, and who a verified token lets act on what.

Tokens carry `sub` (the user id, under the id rule of hsepay.ids), `role` (`user` or `operator`),
`iss`, `aud`, `iat`, `nbf`, `exp` and a `jti`. The algorithm is pinned: a token whose header names
anything but HS256 (`none` included) is refused before any key is tried. Several secrets may be
configured for rotation: tokens are signed with the first, and verified with each in turn.

Nothing here knows HTTP; the API's guard turns `InvalidToken` into a 401 and the CLI issues tokens.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from hsepay.errors import Forbidden
from hsepay.ids import parse_uuid

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "EVERYONE",
    "ISSUER",
    "InvalidToken",
    "Principal",
    "TokenIssuer",
    "TokenVerifier",
]

ALGORITHM = "HS256"
ISSUER = "hsepay"
AUDIENCE = "hsepay-api"
LEEWAY_SECONDS = 10
"""Clock skew tolerated between the issuer and the API on `exp`, `nbf` and `iat`."""
DEFAULT_MAX_TTL = 30 * 24 * 3600
"""The longest token lifetime a server accepts unless HSEPAY_AUTH_MAX_TTL says otherwise."""

Role = Literal["user", "operator"]
ROLES: tuple[Role, ...] = ("user", "operator")


class InvalidToken(Exception):
    """No usable credentials; the message says why (it goes into the 401's detail)."""

    def __init__(self, detail: str, *, missing: bool = False) -> None:
        super().__init__(detail)
        self.missing = missing
        """True when no token was sent at all (RFC 6750: then no `error` attribute is given)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user acting for itself, an operator acting for anyone."""

    subject: uuid.UUID | None
    """The token's `sub`; None for EVERYONE (auth off)."""
    role: Role

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def may_act_for(self, user_id: uuid.UUID) -> bool:
        return self.role == "operator" or self.subject == user_id

    def require_self(self, user_id: uuid.UUID, action: str) -> None:
        """Forbidden unless the caller may act for `user_id` (for ids the caller sends in a body)."""
        if not self.may_act_for(user_id):
            raise Forbidden(f"a user token may {action} only for its own user_id")


EVERYONE = Principal(subject=None, role="operator")
"""The caller when auth is off (development only): every request may do everything, as in the seed."""


@dataclass(frozen=True)
class TokenIssuer:
    secrets: Sequence[str]

    def issue(self, subject: uuid.UUID, role: Role, ttl: float, *, now: float | None = None) -> tuple[str, int]:
        """A signed token and its expiry (Unix seconds)."""
        if not self.secrets:
            raise ValueError("no secret to sign with")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        issued = int(time.time() if now is None else now)
        expires = issued + int(ttl)
        claims = {
            "sub": str(subject),
            "role": role,
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secrets[0], algorithm=ALGORITHM), expires


@dataclass(frozen=True)
class TokenVerifier:
    secrets: Sequence[str]
    max_ttl: float = DEFAULT_MAX_TTL
    """Seconds a token may live (`exp` - `iat`); a longer-lived one is refused, whoever signed it."""

    def verify(self, token: str) -> Principal:
        """The caller a token names, or InvalidToken saying why not.

        Never anything else: whatever the token holds (odd header members, claims of the wrong type,
        huge numbers), a refusal is an InvalidToken, so the API answers 401 and not 500.
        """
        header = _header_of(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"token algorithm {str(header.get('alg'))[:20]!r} is not accepted; only {ALGORITHM}")
        if "crit" in header:  # RFC 7515 §4.1.11: extensions we do not understand must not be ignored
            raise InvalidToken("the token's header names critical extensions ('crit'), which are not supported")
        for name in ("typ", "cty", "kid"):
            if name in header and not isinstance(header[name], str):
                raise InvalidToken(f"the token's header parameter {name!r} must be a string")
        claims = None
        for secret in self.secrets:
            try:
                claims = jwt.decode(
                    token,
                    secret,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    issuer=ISSUER,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue  # maybe signed with the previous secret
            except jwt.ExpiredSignatureError:
                raise InvalidToken("the token has expired") from None
            except jwt.ImmatureSignatureError:
                raise InvalidToken("the token is not valid yet") from None
            except jwt.InvalidAudienceError:
                raise InvalidToken(f"the token's audience is not {AUDIENCE!r}") from None
            except jwt.InvalidIssuerError:
                raise InvalidToken(f"the token's issuer is not {ISSUER!r}") from None
            except jwt.MissingRequiredClaimError as exc:
                raise InvalidToken(f"the token lacks the {exc.claim!r} claim") from None
            except (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError):
                raise InvalidToken("the token is malformed") from None
        if claims is None:
            raise InvalidToken("the token's signature does not verify")
        self._check_lifetime(claims)
        subject = parse_uuid(claims["sub"]) if isinstance(claims["sub"], str) else None
        if subject is None:
            raise InvalidToken("the token's subject is not a user id")
        role = claims.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidToken(f"the token's role must be one of {', '.join(ROLES)}")
        return Principal(subject=subject, role=role)  # type: ignore[arg-type]

    def _check_lifetime(self, claims: dict) -> None:
        issued, expires = claims.get("iat"), claims.get("exp")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (issued, expires)):
            raise InvalidToken("the token is malformed")
        if expires - issued > self.max_ttl:
            raise InvalidToken(
                f"the token lives longer (exp - iat) than this server accepts: at most {self.max_ttl:g} s"
            )


_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")  # empty signature: refused by alg
MAX_TOKEN_CHARS = 8192


def _header_of(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWS in its one canonical spelling: base64url without padding
    (a trailing `=` or other unused bits would be a second spelling of the same signature)."""
    if len(token) > MAX_TOKEN_CHARS or not _COMPACT.fullmatch(token):
        raise InvalidToken("the bearer token is not a JWT")
    segments = token.split(".")
    try:
        decoded = [base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)) for segment in segments]
    except (binascii.Error, ValueError):
        raise InvalidToken("the bearer token is not a JWT") from None
    if any(_b64(raw) != segment for raw, segment in zip(decoded, segments, strict=True)):
        raise InvalidToken("the bearer token is not in canonical base64url (no padding, no stray bits)")
    try:
        header = json.loads(decoded[0])
    except (ValueError, RecursionError):
        raise InvalidToken("the bearer token is not a JWT") from None
    if not isinstance(header, dict):
        raise InvalidToken("the bearer token is not a JWT")
    return header


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
