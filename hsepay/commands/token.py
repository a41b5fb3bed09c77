"""`hsepay token issue`: bearer tokens for the APIs, signed with HSEPAY_AUTH_SECRET."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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
    token, expires = issuer().issue(user_id, role, ttl)
    if as_json:
        expires_at = datetime.fromtimestamp(expires, UTC).isoformat()
        print_json({"token": token, "sub": str(user_id), "role": role, "expires_at": expires_at})
    else:
        print(token)


def announce_auth(console: Console, secrets: tuple[str, ...]) -> None:
    """What `hsepay up` says about auth: a loud banner when it is off, an operator token when it is on."""
    if not secrets:
        console.print(Panel(INSECURE_BANNER, title="WARNING", style="bold red"), markup=False)
        return
    from hsepay.auth import TokenIssuer

    token, expires = TokenIssuer(secrets).issue(uuid.uuid4(), "operator", UP_OPERATOR_TTL)
    expires_at = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
    console.print(f"auth on: an operator token for this session (expires {expires_at}; keep it secret):", markup=False)
    console.print(token, markup=False, highlight=False, soft_wrap=True)
    console.print("more tokens: hsepay token issue USER_ID [--operator]", markup=False)
