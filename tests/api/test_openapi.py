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
def test_the_bearer_scheme_is_documented_and_required_only_when_auth_is_on(service):
    secured = openapi_document(service, auth=True)
    scheme = secured["components"]["securitySchemes"]["bearer"]
    assert {k: scheme[k] for k in ("type", "scheme", "bearerFormat")} == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert "hsepay token issue" in scheme["description"] and "operator" in scheme["description"]
    for path, item in secured["paths"].items():
        for operation in item.values():
            assert operation.get("security") == [{"bearer": []}], path
    insecure = openapi_document(service, auth=False)
    assert "authentication OFF" in insecure["components"]["securitySchemes"]["bearer"]["description"]
    for item in insecure["paths"].values():  # no route claims to require what the server does not check
        assert all("security" not in operation for operation in item.values())


SUCCESS_HEADERS = {"RateLimit-Policy", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"}


@pytest.mark.parametrize(
    "service, path, method, status, extra",
    [
        ("payments", "/accounts", "post", "201", {"Idempotent-Replayed"}),
        ("payments", "/accounts/{user_id}/deposit", "post", "200", {"Idempotent-Replayed"}),
        ("payments", "/accounts/balance", "get", "200", set()),
        ("orders", "/orders", "post", "202", {"Idempotent-Replayed", "Location"}),
        ("orders", "/orders", "get", "200", {"Link"}),
        ("orders", "/orders/{order_id}", "get", "200", set()),
        ("orders", "/order/{order_id}", "get", "200", set()),
    ],
)
def test_every_header_of_the_contract_is_documented(service, path, method, status, extra):
    operation = openapi_document(service, auth=True)["paths"][path][method]
    responses = operation["responses"]
    assert set(responses[status]["headers"]) == SUCCESS_HEADERS | extra
    assert {"Retry-After", *SUCCESS_HEADERS} <= set(responses["429"]["headers"])
    assert "WWW-Authenticate" in responses["401"]["headers"]
    header_parameters = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
    assert header_parameters == ({"Idempotency-Key"} if method == "post" else set())


@pytest.mark.parametrize(
    "service, path, status, body",
    [
        ("payments", "/accounts", "201", "AccountCreated"),
        ("payments", "/accounts/{user_id}/deposit", "200", "BalanceRefilled"),
        ("payments", "/accounts/balance", "200", "Balance"),
        ("orders", "/orders", "202", "OrderAccepted"),
        ("orders", "/orders/{order_id}", "200", "OrderView"),
        ("orders", "/order/{order_id}", "200", "OrderView"),
    ],
)
def test_every_response_body_is_documented_with_its_fields(service, path, status, body):
    document = openapi_document(service, auth=False)
    method = "get" if status == "200" and "deposit" not in path else "post"
    schema = document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    assert schema == {"$ref": f"#/components/schemas/{body}"}
    fields = document["components"]["schemas"][body]["properties"]
    assert fields and all(field.get("type") or field.get("oneOf") for field in fields.values())


def test_order_list_items_are_orders_field_by_field():
    document = openapi_document("orders", auth=False)
    listed = document["paths"]["/orders"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"type": "array", "items": {"$ref": "#/components/schemas/OrderView"}}
    order = document["components"]["schemas"]["OrderView"]
    assert set(order["required"]) == {
        "id",
        "user_id",
        "amount",
        "description",
        "status",
        "reason",
        "created_at",
        "updated_at",
    }
    assert order["properties"]["status"]["enum"] == ["created", "success", "failed"]


@pytest.mark.parametrize(
    "path, allow", [("/orders", "GET, OPTIONS, POST"), ("/order/3fa85f64-5717-4562-b3fc-2c963f66afa6", "GET, OPTIONS")]
)
async def test_options_lists_every_method_of_the_path(orders_client, path, allow):
    response = await orders_client.options(path)
    assert response.status_code == 204
    assert response.headers["allow"] == allow
