"""The gateway's OpenAPI document says what its routes take and answer.

A forwarded route takes and answers exactly what its API does, so its operation is the API's own
(parameters, body, responses, security), put under the gateway's path, plus the 503 and 504 the
gateway answers when that API is down or slow. The APIs' documents come from the wiring point
(hsepay.registry), built for the same security settings; the gateway imports no API module.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, Operation, Reference

from hsepay.api.openapi import BEARER, PROBLEM_JSON

__all__ = ["FORWARDED_ROUTES", "document_forwarded_routes"]

FORWARDED_ROUTES: dict[str, tuple[str, str]] = {
    "/api/accounts": ("payments", "/accounts"),
    "/api/accounts/{user_id}/deposit": ("payments", "/accounts/{user_id}/deposit"),
    "/api/accounts/balance": ("payments", "/accounts/balance"),
    "/api/orders": ("orders", "/orders"),
    "/api/order/{order_id}": ("orders", "/order/{order_id}"),
    "/api/orders/{order_id}": ("orders", "/orders/{order_id}"),
}
"""gateway path -> (service, the API's path it forwards to)."""

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
UPSTREAM_FAILURES = {
    "503": "The upstream API is unavailable (or says so itself)",
    "504": "The upstream API did not answer within HSEPAY_GATEWAY_TIMEOUT",
}


def _problem(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))},
    )


def document_forwarded_routes(openapi: OpenAPI, upstream: Mapping[str, OpenAPI], *, auth: bool) -> None:
    """Replace the forwarded routes' operations in `openapi` with their APIs' ones (see the module)."""
    paths = dict(openapi.paths or {})
    schemas = dict(openapi.components.schemas or {})
    schemes = dict(openapi.components.security_schemes or {})
    for path, (service, upstream_path) in FORWARDED_ROUTES.items():
        source = upstream[service]
        item = (source.paths or {}).get(upstream_path)
        if item is None:
            raise LookupError(f"the {service} API documents no {upstream_path}")
        documented = copy.deepcopy(item)
        for method in _METHODS:
            operation: Operation | None = getattr(documented, method)
            if operation is None:
                continue
            # Unique in the gateway's document: both order paths forward to the same API operation.
            operation.operation_id = "Gateway" + path.title().replace("/", "").replace("{", "").replace("}", "")
            operation.operation_id += method.title()
            operation.tags = ["gateway"]
            responses = dict(operation.responses or {})
            for status, description in UPSTREAM_FAILURES.items():
                responses.setdefault(status, _problem(description))
            operation.responses = responses
        paths[path] = documented
        schemas.update(source.components.schemas or {})
        if auth:
            schemes.update(source.components.security_schemes or {})
    openapi.paths = paths
    openapi.components.schemas = schemas
    if schemes:
        openapi.components.security_schemes = schemes
    summary = paths.get("/api/summary")
    if auth and summary is not None and summary.get is not None:
        summary.get.security = [{BEARER: []}]  # it forwards the caller's token to both APIs
