"""hsepay serves OpenAPI 3.0.3: the one version whose schemas mean "integer" as hsepay does (no 3997.0)."""

from __future__ import annotations

import json

import pytest

from hsepay.api.openapi30 import as_openapi_30
from tests.api.test_schemathesis import openapi_document


def test_the_31_spellings_of_null_become_nullable():
    document = {
        "openapi": "3.1.0",
        "components": {
            "schemas": {
                "A": {"type": ["null", "string"], "enum": ["x", None]},
                "B": {"oneOf": [{"type": "string", "format": "uuid"}, {"type": "null"}]},
                "C": {"oneOf": [{"$ref": "#/components/schemas/A"}, {"type": "null"}]},
                "D": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
                "E": {"type": ["null", "object", "array"]},
            }
        },
    }
    schemas = as_openapi_30(document)["components"]["schemas"]
    assert schemas["A"] == {"type": "string", "enum": ["x", None], "nullable": True}
    assert schemas["B"] == {"type": "string", "format": "uuid", "nullable": True}
    assert schemas["C"] == {"allOf": [{"$ref": "#/components/schemas/A"}], "nullable": True}
    assert schemas["D"] == {"anyOf": [{"type": "integer"}, {"type": "string"}], "nullable": True}
    assert schemas["E"] == {"anyOf": [{"type": "object"}, {"type": "array"}], "nullable": True}
    assert document["components"]["schemas"]["A"]["type"] == ["null", "string"]  # the input is left alone


@pytest.mark.parametrize("service", ["payments", "orders", "gateway"])
@pytest.mark.parametrize("auth", [False, True])
def test_every_served_document_is_30_without_31_constructs(service, auth):
    document = openapi_document(service, auth)
    assert document["openapi"] == "3.0.3"
    text = json.dumps(document)
    assert '"type": "null"' not in text and '"type": [' not in text
