"""`hsepay token issue`: bearer tokens for the APIs, signed with HSEPAY_AUTH_SECRET."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from hsepay.commands.common import EXIT_USAGE, JsonOption, fail, print_json, uuid_argument
from hsepay.config import ConfigError, get_settings

if TYPE_CHECKING:
    from hsepay.auth import TokenIssuer

app = typer.Typer(
    no_args_is_help=True,
    help="Bearer tokens for the APIs (auth on: HSEPAY_AUTH_SECRET set). Example: hsepay token issue <user-uuid>",
)

DEFAULT_TTL = 3600
MIN_TTL = 60  # shorter would hardly outlive the 10 s of clock skew that verification forgives
MAX_TTL = 366 * 24 * 3600
UP_OPERATOR_TTL = 24 * 3600

INSECURE_BANNER = (
    "AUTHENTICATION IS OFF (HSEPAY_AUTH_SECRET is not set): anyone who can reach these ports can read every "
    "balance, deposit into any account and spend any user's money. For local development only; "
    "set HSEPAY_AUTH_SECRET to turn bearer tokens on."
)


def _secrets() -> tuple[str, ...]:
    try:
        return get_settings().security.auth_secrets
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def _max_ttl() -> float:
    try:
        return get_settings().security.auth_max_ttl
    except ConfigError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


def require_auth_choice(insecure_no_auth: bool) -> None:
    """`hsepay serve` runs with auth, or without it only when told so: exit 2 with one line otherwise."""
    secrets = _secrets()
    if not secrets and not insecure_no_auth:
        raise fail(
            "HSEPAY_AUTH_SECRET is not set: refusing to serve without authentication "
            "(set it, or pass --insecure-no-auth for local development)",
            EXIT_USAGE,
        )
    if secrets and insecure_no_auth:
        raise fail("--insecure-no-auth contradicts HSEPAY_AUTH_SECRET, which is set: unset one of them", EXIT_USAGE)


def issuer() -> TokenIssuer:
    """The signer of new tokens; exit 2 with one line when auth is off or the secret is bad."""
    secrets = _secrets()
    if not secrets:
        raise fail("HSEPAY_AUTH_SECRET is not set: auth is off and there is nothing to sign tokens with", EXIT_USAGE)
    from hsepay.auth import TokenIssuer  # PyJWT and its crypto: only for a command that signs

    return TokenIssuer(secrets)


@app.command()
def issue(
    user_id: Annotated[
        uuid.UUID,
        typer.Argument(help="The user the token acts for (its `sub`).", show_default=False, parser=uuid_argument),
    ],
    operator: Annotated[
        bool, typer.Option("--operator", help="An operator token: acts on every account and order.")
    ] = False,
    ttl: Annotated[
        int,
        typer.Option(
            min=MIN_TTL,
            max=MAX_TTL,
            help=f"Seconds until the token expires, {MIN_TTL} (a minute) to {MAX_TTL} (366 days).",
        ),
    ] = DEFAULT_TTL,
    as_json: JsonOption = False,
) -> None:
    """Print a bearer token (HS256, signed with the first secret in HSEPAY_AUTH_SECRET).

    Example: hsepay token issue 3fa85f64-5717-4562-b3fc-2c963f66afa6 --ttl 600
    """
    role = "operator" if operator else "user"
    signer = issuer()
    if ttl > _max_ttl():
        raise fail(
            f"--ttl {ttl} is longer than the APIs accept (HSEPAY_AUTH_MAX_TTL={_max_ttl():g} s): such a token "
            "would be refused",
            EXIT_USAGE,
        )
    token, expires = signer.issue(user_id, role, ttl)
    if as_json:
        expires_at = datetime.fromtimestamp(expires, UTC).isoformat()
        print_json({"token": token, "sub": str(user_id), "role": role, "expires_at": expires_at})
    else:
        print(token)


OPERATOR_TOKEN_FILE = "operator-token"


def announce_auth(console: Console, secrets: tuple[str, ...], data_dir: Path) -> None:
    """What `hsepay up` says about auth: a loud banner when it is off; when it is on, where the
    session's operator token is. The token itself goes to a file only readable by this user, never
    to the output, which ends up in logs whenever it is redirected (docs/decisions.md)."""
    if not secrets:
        console.print(Panel(INSECURE_BANNER, title="WARNING", style="bold red"), markup=False)
        return
    from hsepay.auth import TokenIssuer

    token, expires = TokenIssuer(secrets).issue(uuid.uuid4(), "operator", UP_OPERATOR_TTL)
    path = write_private(Path(data_dir) / OPERATOR_TOKEN_FILE, token + "\n")
    expires_at = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
    console.print(f"auth on: an operator token for this session (expires {expires_at}) is in {path}", markup=False)
    console.print(f'use it with: curl -H "Authorization: Bearer $(cat {path})" …', markup=False, highlight=False)
    console.print("more tokens: hsepay token issue USER_ID [--operator]", markup=False)


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` readable by this user only (0600 from creation, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(draft, path)
    return path
