"""The OpenAPI document tells the truth: problem+json errors with each route's statuses, uuid path
ids, closed bodies, the bearer scheme when auth is on, and OPTIONS naming every method of a path."""

from __future__ import annotations

import pytest

from tests.api.test_schemathesis import openapi_document

PROBLEM = "application/problem+json"


@pytest.mark.parametrize(
    "service, path, method, statuses",
    [
        ("payments", "/accounts", "post", {"201", "400", "401", "403", "409", "413", "415", "429", "503"}),
        (
            "payments",
            "/accounts/{user_id}/deposit",
            "post",
            {"200", "400", "401", "403", "404", "409", "413", "415", "429", "503"},
        ),
        ("payments", "/accounts/balance", "get", {"200", "400", "401", "404", "429", "503"}),
        ("orders", "/orders", "post", {"202", "400", "401", "403", "409", "413", "415", "429", "503"}),
        ("orders", "/orders", "get", {"200", "400", "401", "403", "429", "503"}),
        ("orders", "/orders/{order_id}", "get", {"200", "400", "401", "404", "429", "503"}),
        ("orders", "/order/{order_id}", "get", {"200", "400", "401", "404", "429", "503"}),
    ],
)
def test_errors_are_documented_as_problem_json_with_their_statuses(service, path, method, statuses):
    responses = openapi_document(service, auth=True)["paths"][path][method]["responses"]
    assert statuses <= responses.keys()
    for status, response in responses.items():
        if int(status) >= 400:
            assert list(response["content"]) == [PROBLEM], (status, response)


@pytest.mark.parametrize(
    "service, path, name",
    [("payments", "/accounts/{user_id}/deposit", "user_id"), ("orders", "/orders/{order_id}", "order_id")],
)
def test_path_ids_are_uuids(service, path, name):
    item = openapi_document(service, auth=False)["paths"][path]
    parameters = [p for op in item.values() if isinstance(op, dict) for p in op.get("parameters", [])]
    (parameter,) = [p for p in parameters if p["name"] == name]
    assert parameter["in"] == "path" and parameter["schema"]["format"] == "uuid"


@pytest.mark.parametrize(
    "service, body", [("payments", "CreateAccount"), ("payments", "Deposit"), ("orders", "CreateOrder")]
)
def test_request_bodies_are_closed(service, body):
    assert openapi_document(service, auth=False)["components"]["schemas"][body]["additionalProperties"] is False


@pytest.mark.parametrize("service", ["payments", "orders"])
def test_bearer_scheme_only_when_auth_is_on(service):
    secured = openapi_document(service, auth=True)
    assert secured["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": secured["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, item in secured["paths"].items():
        for operation in item.values():
            assert operation.get("security") == [{"bearer": []}], path
    assert "securitySchemes" not in openapi_document(service, auth=False).get("components", {})


@pytest.mark.parametrize(
    "path, allow", [("/orders", "GET, OPTIONS, POST"), ("/order/3fa85f64-5717-4562-b3fc-2c963f66afa6", "GET, OPTIONS")]
)
async def test_options_lists_every_method_of_the_path(orders_client, path, allow):
    response = await orders_client.options(path)
    assert response.status_code == 204
    assert response.headers["allow"] == allow
