"""How a setting is declared and read: `setting()` binds env var, default, parser and doc in one field,
and the parsers turn one raw string into a value or a ConfigError that names the variable."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


Parser = Callable[[str, str], Any]
"""(raw value, variable name) -> parsed value, or ConfigError naming the variable."""


@dataclass(frozen=True)
class Setting:
    env: str | None
    parse: Parser | None
    doc: str


def section(cls: type) -> Any:
    """A nested settings dataclass, loaded from the same environment."""
    return field(default_factory=cls, metadata={"section": cls})


def setting(default: Any, env: str | None, parse: Parser | None, doc: str, *, secret: bool = False) -> Any:
    """A dataclass field whose env var, parser and doc travel with its default (a secret is never in a repr)."""
    kwargs: dict[str, Any] = (
        {"default_factory": default} if callable(default) and not isinstance(default, type) else {"default": default}
    )
    return field(metadata={"setting": Setting(env, parse, doc)}, repr=not secret, **kwargs)


def choice(*allowed: str) -> Parser:
    """One of `allowed`, in any case; returned as `allowed` spells it."""
    spelled = {value.lower(): value for value in allowed}

    def parse(raw: str, name: str) -> str:
        value = spelled.get(raw.strip().lower())
        if value is None:
            raise ConfigError(f"{name}: {raw!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def readable_file(raw: str, name: str) -> Path:
    file = Path(raw.strip()).expanduser()
    if not file.is_file():
        raise ConfigError(f"{name}: {str(file)!r} is not a readable file")
    return file


# --- parsers ---------------------------------------------------------------------------------


def integer(minimum: int = 1, maximum: int = 2**31 - 1) -> Parser:
    def parse(raw: str, name: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not an integer") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}: must be between {minimum} and {maximum}, got {value}")
        return value

    return parse


def seconds(minimum: float = 0.001, maximum: float = 10 * 365 * 24 * 3600.0) -> Parser:
    """A finite duration in seconds: `nan`, `inf` and `1e309` are refused, not silently accepted."""

    def parse(raw: str, name: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name}: {raw!r} is not a finite number of seconds")
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}: must be between {minimum:g} and {maximum:g} seconds, got {value:g}")
        return value

    return parse


def text(raw: str, name: str) -> str:
    return raw.strip()


def boolean(raw: str, name: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}: {raw!r} is not a boolean (use true or false)")


_KAFKA_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


def kafka_name(raw: str, name: str) -> str:
    raw = raw.strip()
    if not _KAFKA_NAME.match(raw):
        raise ConfigError(f"{name}: {raw!r} is not a valid Kafka name (letters, digits, '.', '_', '-')")
    return raw


def bootstrap_servers(raw: str, name: str) -> str:
    servers = [server.strip() for server in raw.split(",")]
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"{name}: {server!r} is not host:port")
    return ",".join(servers)


def path(raw: str, name: str) -> Path:
    return Path(raw.strip()).expanduser()


MIN_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key must be at least as long as the hash output (256 bits)."""


def secrets_list(raw: str, name: str) -> tuple[str, ...]:
    """Comma-separated signing secrets, current first; the message never repeats a secret."""
    secrets = tuple(part.strip() for part in raw.split(","))
    for position, secret in enumerate(secrets, 1):
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{name}: secret #{position} is {len(secret.encode())} bytes; each needs at least {MIN_SECRET_BYTES} "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
    return secrets


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\*$")


def origins(raw: str, name: str) -> tuple[str, ...]:
    """Comma-separated browser origins (scheme://host[:port], no path), or `*`."""
    found = tuple(part.strip() for part in raw.split(","))
    for origin in found:
        if not _ORIGIN.match(origin):
            raise ConfigError(f"{name}: {origin[:100]!r} is not an origin (scheme://host[:port], or *)")
    return found


def networks(raw: str, name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP addresses or CIDR networks."""
    found = []
    for part in raw.split(","):
        try:
            found.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{name}: {part.strip()[:100]!r} is not an IP address or network") from None
    return tuple(found)


def normalise_db_url(raw: str, variable: str) -> str:
    """Any PostgreSQL URL or conninfo string libpq accepts, as the canonical SQLAlchemy psycopg 3
    URL (see `dburl`), or a ConfigError naming `variable`."""
    # Imported here: the settings are read by every command, `hsepay --help` too, and SQLAlchemy
    # and psycopg cost ~0.2 s to import; only a configured database URL needs them.
    from hsepay.config.dburl import DatabaseUrlError, canonical_db_url

    try:
        return canonical_db_url(raw)
    except DatabaseUrlError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def redacted_url(url: str) -> str:
    """A URL as a repr or a log line may show it: its password masked (also `?password=`)."""
    from hsepay.config.dburl import redacted

    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", redacted(url))


def repr_masking_urls(self: Any) -> str:
    """A settings dataclass's repr, as the dataclass would write it but with every URL's password
    masked (a repr ends up in logs and tracebacks); secret fields are left out, as `secret=True` says."""
    shown = []
    for f in fields(self):
        if not f.repr:
            continue
        value = getattr(self, f.name)
        shown.append(
            f"{f.name}={redacted_url(value)!r}" if isinstance(value, str) and "://" in value else f"{f.name}={value!r}"
        )
    return f"{type(self).__name__}({', '.join(shown)})"


def database_url(raw: str, name: str) -> str:
    return normalise_db_url(raw, name)


# --- settings --------------------------------------------------------------------------------


def url(raw: str, name: str) -> str:
    raw = raw.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", raw):
        raise ConfigError(f"{name}: {raw!r} is not an http(s)://host:port URL")
    return raw
