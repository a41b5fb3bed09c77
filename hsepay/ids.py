"""One rule for ids that clients send — in paths, queries, bodies and CLI arguments alike.

An id is a UUID written as 32 hex digits, in either case, with or without the four hyphens of the
8-4-4-4-12 form: exactly what msgspec accepts when it decodes a body or a query parameter. The other
spellings Python's `uuid.UUID` accepts (braces, a `urn:uuid:` prefix) are refused everywhere. Once
parsed, an id has one canonical spelling, `str(uuid)`, which is what scopes and keys are built from.
"""

from __future__ import annotations

import uuid

import msgspec

__all__ = ["parse_uuid"]


def parse_uuid(raw: str) -> uuid.UUID | None:
    """The UUID a client meant, or None if `raw` is not a UUID under the rule above."""
    try:
        return msgspec.convert(raw, uuid.UUID)
    except msgspec.ValidationError:
        return None
