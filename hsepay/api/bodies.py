"""Request bodies: JSON only, decoded once and strictly, with no duplicate keys.

Litestar converts bodies leniently ("100" → 100, 10.0 → 10) and would parse each body twice if a
handler re-decoded it; money must not be lenient. So a body-taking handler declares its schema with
`json_body(Schema)`: Litestar then hands the raw bytes to `StrictBody`, which decodes them once with
msgspec in strict mode (no coercion, unknown fields refused), and the OpenAPI document still shows
the schema, closed (`additionalProperties: false`) by `ClosedStructSchemaPlugin`.

The checks around that one decode:
- a POST must say `Content-Type: application/json` (or `application/<x>+json`): anything else is 415,
  so a browser's cross-origin "simple" request (text/plain, a form) is never applied;
- duplicate keys are a 400 (msgspec, like most parsers, would let the last one win);
- nesting cannot blow the stack: a typed decode never descends below the schema, and a
  RecursionError anyway is a 400.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any, Generic, TypeVar

import msgspec
from litestar import Request
from litestar.dto import AbstractDTO
from litestar.dto.data_structures import DTOFieldDefinition
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.spec import Reference, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.typing import FieldDefinition

__all__ = [
    "ClosedStructSchemaPlugin",
    "StrictBody",
    "UnsupportedMediaType",
    "decode_strict",
    "is_json_media_type",
    "json_body",
    "require_json",
]

T = TypeVar("T")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_DEPTH = 32


class UnsupportedMediaType(HTTPException):
    status_code = 415


def is_json_media_type(content_type: str) -> bool:
    """application/json or application/<anything>+json, parameters (charset) ignored."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def require_json(request: Request) -> None:
    """A before_request hook: refuse a body method whose Content-Type is not JSON (415)."""
    if request.method in BODY_METHODS and not is_json_media_type(request.headers.get("content-type", "")):
        raise UnsupportedMediaType(detail="the request body must be JSON: send Content-Type: application/json")


# A JSON string (escapes included), and whether a colon follows it (then it is an object key), or a bracket.
_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"(\s*:)?|[\[\]{}]', re.DOTALL)


_KEY = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*:')


def _key(raw: bytes) -> bytes:
    return msgspec.json.decode(b'"' + raw + b'"').encode() if b"\\" in raw else raw  # "a" and "\u0061" are one key


def check_structure(body: bytes) -> None:
    """400 for duplicate keys in an object, or nesting deeper than MAX_DEPTH.

    Only for bodies that are valid JSON (the strict decode ran first): then every string is closed
    and the scan is linear. Every hsepay body is one flat object; that case takes a shortcut (one
    findall over the keys, 3× cheaper than the general walk) when no other brace or bracket appears.
    """
    if body.count(b"{") == 1 and b"[" not in body:
        keys = [_key(raw) for raw in _KEY.findall(body)]
        if len(keys) == len(set(keys)):
            return
    stack: list[set[bytes] | None] = []
    for token in _TOKEN.finditer(body):
        text = token.group(0)
        if text == b"{" or text == b"[":
            stack.append(set() if text == b"{" else None)
            if len(stack) > MAX_DEPTH:
                raise ValidationException(detail=f"Request body is nested deeper than {MAX_DEPTH} levels")
        elif text == b"}" or text == b"]":
            stack.pop()
        elif token.group(2) is not None and stack and stack[-1] is not None:
            key = _key(token.group(1))
            if key in stack[-1]:
                raise ValidationException(detail=f"Request body repeats the key {key.decode()[:64]!r}")
            stack[-1].add(key)


def decode_strict(body: bytes, schema: type[T]) -> T:
    """The body as `schema`, decoded once in strict mode; every refusal is a 400."""
    try:
        value = msgspec.json.decode(body, type=schema, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationException(detail=f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValidationException(detail=f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValidationException(detail="Request body is nested too deeply") from None
    except UnicodeDecodeError:
        # msgspec raises it, not DecodeError, for invalid UTF-8 inside a JSON string
        raise ValidationException(detail="Request body is not valid UTF-8") from None
    check_structure(body)
    return value


class StrictBody(AbstractDTO[T], Generic[T]):
    """A 'DTO' that only decodes: Litestar passes it the raw body, once (see the module doc)."""

    @classmethod
    def create_for_field_definition(cls, field_definition: FieldDefinition, handler_id: str, backend_cls=None) -> None:
        return None  # no transfer model: decode_bytes below needs none

    @classmethod
    def generate_field_definitions(cls, model_type: type[Any]) -> Generator[DTOFieldDefinition, None, None]:
        raise NotImplementedError("StrictBody builds no transfer model")

    @classmethod
    def detect_nested_field(cls, field_definition: FieldDefinition) -> bool:
        return False

    def decode_bytes(self, value: bytes) -> T:
        return decode_strict(value, self.model_type)

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: Any
    ) -> Reference | Schema:
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))


def json_body(schema: type) -> dict[str, Any]:
    """Route decorator arguments for a handler whose `data: schema` is a strict JSON body."""
    return {"dto": StrictBody[schema], "return_dto": None, "before_request": require_json}


class ClosedStructSchemaPlugin(OpenAPISchemaPlugin):
    """Structs that refuse unknown fields are documented as closed: `additionalProperties: false`."""

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        return (
            not field_definition.is_union
            and field_definition.is_subclass_of(msgspec.Struct)
            and field_definition.type_.__struct_config__.forbid_unknown_fields
        )

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        from litestar._openapi.schema_generation.plugins import StructSchemaPlugin

        schema = StructSchemaPlugin().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        return schema
