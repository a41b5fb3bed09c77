"""Bearer tokens for tests: good ones from the real issuer, and forged or broken ones built by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from hsepay.auth import AUDIENCE, ISSUER, TokenIssuer

SECRET = "test-secret-" + "s" * 32
PREVIOUS_SECRET = "old-secret-" + "p" * 32
OTHER_SECRET = "someone-elses-secret-" + "x" * 32


def issue(user: uuid.UUID, role: str = "user", secret: str = SECRET, ttl: float = 3600) -> str:
    return TokenIssuer([secret]).issue(user, role, ttl)[0]  # type: ignore[arg-type]


def claims(user: uuid.UUID | str, role: str = "user", **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    # Valid for hours: parametrized tokens are made when pytest collects, and a loaded box's whole run
    # (unit tests come last) took 28 min, past a 10-minute expiry, which then hid the reason under test.
    base = {
        "sub": str(user),
        "role": role,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + 6 * 3600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(payload: dict[str, Any], *, secret: str = SECRET, alg: str = "HS256") -> str:
    """A JWT signed by hand: any header `alg`, HMAC-SHA256/512 or no signature at all (`none`)."""
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(payload).encode())
    signing_input = f"{header}.{body}".encode()
    if alg == "none":
        return f"{header}.{body}."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    return f"{header}.{body}.{_b64(hmac.new(secret.encode(), signing_input, digest).digest())}"
