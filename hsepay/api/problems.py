"""Every error as RFC 9457 problem+json: domain errors mapped once, nothing leaks a traceback."""

from __future__ import annotations

import logging
import math
import time
import traceback
from http import HTTPStatus
from pathlib import PurePath
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin
from sqlalchemy.exc import DBAPIError

from hsepay.errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from hsepay.resilience import Unavailable, describe, is_unavailable

__all__ = ["problem_details_plugin", "undecodable_body_handler", "unexpected_error_handler"]

log = logging.getLogger(__name__)

_STATUS = {NotFound: 404, Conflict: 409, InvalidRequest: 400, Forbidden: 403}


def _status_of(exc: DomainError) -> int:
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return status
    return 422


def _domain_problem(exc: DomainError) -> ProblemDetailsException:
    return ProblemDetailsException(status_code=_status_of(exc), title=exc.title, detail=str(exc))


def _validation_problem(exc: ValidationException) -> ProblemDetailsException:
    extra: dict[str, Any] = {}
    if isinstance(exc.extra, list):
        # Litestar reports a missing body as the bare key name; say what is wrong instead.
        extra["errors"] = [
            {**e, "message": "a JSON object body is required"}
            if isinstance(e, dict) and e.get("key") == "data" and e.get("message") == "'data'"
            else e
            for e in exc.extra
        ]
    elif exc.extra:
        extra["errors"] = exc.extra
    return ProblemDetailsException(status_code=400, title="Invalid request", detail=exc.detail, extra=extra)


def _http_problem(exc: HTTPException) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=exc.status_code, title=HTTPStatus(exc.status_code).phrase, detail=exc.detail, headers=exc.headers
    )


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            enable_for_all_http_exceptions=True,
            exception_to_problem_detail_map={
                DomainError: _domain_problem,
                ValidationException: _validation_problem,
                HTTPException: _http_problem,
            },
        )
    )


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response(
        {"status": status, "title": title, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


class _Throttled:
    """At most one line per `every` seconds; the lines left out are counted in the next one. An outage
    answers every request 503 (a 30 s cut gave 1,600 identical lines) and the log must stay readable."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.last = -math.inf
        self.skipped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.skipped += 1
            return
        if self.skipped:
            message += f" (and {self.skipped} more since)"
        self.last, self.skipped = now, 0
        log.warning(message, *args)


_unavailable_lines = _Throttled()


def database_error_handler(request: Request, exc: DBAPIError) -> Response[dict[str, Any]]:
    if is_unavailable(exc):
        _unavailable_lines.warning("database unavailable on %s %s: %s", request.method, request.url.path, describe(exc))
        return _unavailable()
    # One line: the driver's first line names the fault; the statement and its parameters (and
    # their data) stay out of the log, as they stay out of the response.
    log.error("database error on %s %s: %s", request.method, request.url.path, describe(exc))
    return _problem(500, "Internal error", "an unexpected database error occurred")


def undecodable_body_handler(request: Request, exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
    # msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 inside a JSON string,
    # and Litestar's body parsing lets it through: it is the client's bytes, so a 400, not a 500.
    return _problem(400, "Invalid request", "Request body is not valid UTF-8")


def unexpected_error_handler(request: Request, exc: Exception) -> Response[dict[str, Any]]:
    if is_unavailable(exc):  # e.g. the pool's TimeoutError: every connection busy past HSEPAY_DB_POOL_TIMEOUT
        _unavailable_lines.warning("database unavailable on %s %s: %s", request.method, request.url.path, describe(exc))
        return _unavailable(exc)
    log.error("unhandled error on %s %s: %s (at %s)", request.method, request.url.path, describe(exc), _where(exc))
    return _problem(500, "Internal error", "an unexpected error occurred")


def _unavailable(exc: BaseException | None = None) -> Response[dict[str, Any]]:
    """503 with Retry-After; what hsepay itself decided (a deadline, a full queue, an unconfirmed
    commit) says so, since the client's next step depends on it."""
    detail = str(exc) if isinstance(exc, Unavailable) else "the database is unavailable; retry later"
    return _problem(503, "Service unavailable", detail, {"Retry-After": "1"})


def _where(exc: BaseException) -> str:
    """file:line of the innermost frame: enough to find a bug without a traceback in the log."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{PurePath(last.filename).name}:{last.lineno} in {last.name}"
