"""The OpenAPI documents hsepay serves are OpenAPI 3.0.3, whose schemas say "integers only" as hsepay
means it (docs/decisions.md, "OpenAPI 3.0").

Amounts are JSON integers: `3997.0` is refused (DESIGN §3, strict money). In OpenAPI 3.1 (JSON Schema
2020-12) `3997.0` *is* an integer, so a 3.1 document allowed what the API refuses, and schemathesis's
positive-data check said so. OpenAPI 3.0's schemas (JSON Schema Wright draft 00) define an integer as
a JSON number without a fraction: exactly the contract. Litestar writes 3.1; `as_openapi_30` rewrites
the two 3.1 spellings hsepay's documents use (a `"null"` in `type`, a `{"type": "null"}` branch of
`oneOf`/`anyOf`) as 3.0's `nullable`, and the render plugins serve the result at /schema/openapi.json
and in Swagger UI.
"""

from __future__ import annotations

import copy
from typing import Any

from litestar import Request
from litestar.openapi.plugins import JsonRenderPlugin

from hsepay.apidocs import OfflineSwagger

__all__ = ["OPENAPI_VERSION", "Json30RenderPlugin", "OfflineSwagger30", "as_openapi_30"]

OPENAPI_VERSION = "3.0.3"


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI 3.1 document of hsepay as the equivalent 3.0.3 one (a new dict)."""
    converted = _schemas(copy.deepcopy(document))
    converted["openapi"] = OPENAPI_VERSION
    return converted


def _schemas(node: Any) -> Any:
    if isinstance(node, list):
        return [_schemas(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _schemas(value) for key, value in node.items()}
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) == 1:
            node["type"] = kinds[0]
        else:  # 3.0 has no list of types: one branch each
            del node["type"]
            node["anyOf"] = [{"type": k} for k in kinds]
        if len(kinds) < len(kind):
            node["nullable"] = True
    for combinator in ("oneOf", "anyOf"):
        branches = node.get(combinator)
        if not isinstance(branches, list) or not any(_is_null(b) for b in branches):
            continue
        rest = [b for b in branches if not _is_null(b)]
        del node[combinator]
        if len(rest) == 1 and "$ref" not in rest[0]:
            node = {**rest[0], **node}
        elif len(rest) == 1:
            node["allOf"] = rest  # 3.0 ignores siblings of a $ref
        else:
            node[combinator] = rest
        node["nullable"] = True
    return node


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null" and len(schema) == 1


class Json30RenderPlugin(JsonRenderPlugin):
    """/schema/openapi.json as OpenAPI 3.0.3."""

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, as_openapi_30(openapi_schema))


class OfflineSwagger30(OfflineSwagger):
    """Swagger UI (hsepay.apidocs: from the package, no CDN) over the same OpenAPI 3.0.3 document."""

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, as_openapi_30(openapi_schema))
