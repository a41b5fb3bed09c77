"""Domain errors shared by both services; mapped once to problem+json (api/) and exit codes (cli)."""

from __future__ import annotations

__all__ = ["Conflict", "DomainError", "Forbidden", "InvalidRequest", "NotFound"]


class DomainError(Exception):
    """A request the domain refuses; `title` is a stable short text, `str(exc)` the detail."""

    title = "Request refused"


class NotFound(DomainError):
    title = "Not found"


class Conflict(DomainError):
    title = "Conflict"


class InvalidRequest(DomainError):
    title = "Invalid request"


class Forbidden(DomainError):
    """The caller is known but may not do this (a user acting for another user, a user depositing)."""

    title = "Forbidden"
