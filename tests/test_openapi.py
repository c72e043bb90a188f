"""The OpenAPI document describes every route, request, response and error; /docs renders it."""

from __future__ import annotations

from tally.http.routes import ROUTES
from tests.support import Api


def test_the_document_lists_every_route_with_its_success_and_error_answers(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
        assert {"401", "403"} <= set(operation["responses"])
        if route.body is not None:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[1]
            assert name in document["components"]["schemas"]


def test_the_award_body_schema_has_the_contract_limits(api: Api) -> None:
    schemas = api.client.get("/openapi.json").json()["components"]["schemas"]
    award = schemas["AwardIn"]
    assert set(award["required"]) == {"member_id", "points", "reason"}
    assert award["additionalProperties"] is False
    assert award["properties"]["points"]["minimum"] == 1
    assert award["properties"]["points"]["maximum"] == 1_000_000_000


def test_errors_are_described_by_code(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    deduct = document["paths"]["/v1/points/deduct"]["post"]["responses"]
    assert "insufficient_points" in deduct["422"]["description"]
    assert "member_not_found" in deduct["404"]["description"]


def test_docs_page_renders_the_document(api: Api) -> None:
    response = api.client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert "/openapi.json" in response.text
