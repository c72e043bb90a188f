"""The OpenAPI document describes every route, request, response and error; /docs renders it.

Every status a route answers is listed in its entry: a battery of requests proves it for every
route here, and the shared client (`tests.support.Api`) checks every answer of the whole suite.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Match

import tally.http
from tally.domain import Scope
from tally.http.errors import STATUS_OF_CODE
from tally.http.openapi import openapi_document
from tally.http.routes import ROUTES, starlette_routes
from tally.http.routes.spec import RouteSpec
from tally.maintenance import create_key, run_async
from tally.ports import Store
from tally.service import Ledger
from tests.support import (
    Api,
    FakeClock,
    assert_documented,
    documented_operation,
    error_code,
    serve_app,
)


def test_the_document_lists_every_route_with_its_success_and_error_answers(api: Api) -> None:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert str(route.status) in operation["responses"]
        if route.auth:
            assert {"401", "403", "429"} <= set(operation["responses"])
        else:  # the operations routes, outside /v1
            assert operation["security"] == [] and "401" not in operation["responses"]
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


CANCELS = ["/v1/transactions/{transaction_id}/cancel", "/v1/redemptions/{redemption_id}/cancel"]


def test_a_route_that_takes_an_empty_body_says_its_body_is_optional() -> None:
    document = openapi_document(ROUTES)
    for path in [*CANCELS, "/v1/members"]:
        assert document["paths"][path]["post"]["requestBody"]["required"] is False, path
    assert document["paths"]["/v1/points/award"]["post"]["requestBody"]["required"] is True


def test_a_cancel_takes_no_fields_and_lists_the_refusals_of_a_body() -> None:
    document = openapi_document(ROUTES)
    assert document["components"]["schemas"]["CancelIn"]["properties"] == {}
    assert document["components"]["schemas"]["CancelIn"]["additionalProperties"] is False
    for path in CANCELS:
        responses = document["paths"][path]["post"]["responses"]
        assert "invalid_json" in responses["400"]["description"]
        assert "validation_error" in responses["422"]["description"]


def test_errors_are_described_by_code(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    deduct = document["paths"]["/v1/points/deduct"]["post"]["responses"]
    assert "insufficient_points" in deduct["422"]["description"]
    assert "member_not_found" in deduct["404"]["description"]


def test_docs_page_renders_the_document(api: Api) -> None:
    response = api.client.get("/docs")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    scripts = re.findall(r'<script src="([^"]+)"></script>', response.text)
    started = "".join(api.client.get(src).text for src in scripts)
    assert "SwaggerUIBundle(" in started and '"/openapi.json"' in started


def test_docs_page_loads_only_files_this_server_serves(api: Api) -> None:
    page = api.client.get("/docs").text
    assert "//" not in page.replace("<!doctype html>", "")  # no scheme, no protocol-relative URL
    assert "<script>" not in page  # no inline script: the page's policy allows none
    linked = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert linked and all(url.startswith("/docs/") for url in linked), linked
    for url in linked:
        asset = api.client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(("text/javascript", "text/css")), url
        assert asset.content
    init = api.client.get("/docs/tally-init.js").text
    assert "validatorUrl: null" in init  # else Swagger UI fetches a badge from swagger.io


def test_the_vendored_files_are_package_data() -> None:
    """A non-editable install carries Swagger UI (pyproject's package-data names the folder)."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["tally.http"]
    package = Path(tally.http.__file__).parent
    served = {"swagger-ui-bundle.js", "swagger-ui.css", "tally-init.js", "LICENSE", "NOTICE"}
    for name in served:
        assert any(fnmatch.fnmatch(f"static/swagger-ui/{name}", p) for p in patterns), name
        assert (package / "static" / "swagger-ui" / name).stat().st_size > 0


def test_a_file_beside_the_assets_is_not_served(api: Api) -> None:
    for path in ("/docs/README.md", "/docs/../config.py", "/docs/LICENSE"):
        assert api.client.get(path).status_code == 404, path


def test_the_served_document_is_the_one_the_tests_check_answers_against(api: Api) -> None:
    assert api.client.get("/openapi.json").json() == json.loads(
        json.dumps(openapi_document(ROUTES))
    )


def test_every_error_code_a_route_can_answer_has_a_status_in_the_error_table() -> None:
    unknown = {
        f"{route.method} {route.path}": code
        for route in ROUTES
        for code in route.error_codes
        if code not in STATUS_OF_CODE
    }
    assert unknown == {}


def test_every_operation_lists_a_bug_and_an_unavailable_database_with_retry_after() -> None:
    document = openapi_document(ROUTES)
    for route in ROUTES:
        responses = document["paths"][route.path][route.method.lower()]["responses"]
        assert "internal_error" in responses["500"]["description"]
        if route.auth or route.path == "/readyz":  # /healthz and /metrics ask no database
            assert "unavailable" in responses["503"]["description"]
            assert "Retry-After" in responses["503"]["headers"]


def test_every_answer_of_every_operation_lists_its_request_id() -> None:
    document = openapi_document(ROUTES)
    for route in ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert "X-Request-Id" in [p["name"] for p in operation["parameters"]]
        for status, answer in operation["responses"].items():
            assert "X-Request-Id" in answer["headers"], (route.path, status)


# Every route, sent a battery of good and bad requests: every status it answers is documented.

LIMIT = 1000
UNKNOWN_KEY = "tally_" + "A" * 43


@dataclass(frozen=True)
class Sent:
    """One request of the battery (headers beyond the key; `content` wins over `body`)."""

    path: str
    body: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    params: dict[str, str] = field(default_factory=dict)


def the_world(api: Api) -> dict[str, str]:
    """One of everything in program `acme`: the ids a route's path can name."""
    hook = api.post("/v1/webhook_endpoints", {"url": "https://8.8.8.8/hook"})
    endpoint_id = hook.json()["data"]["endpoint_id"]
    api.member("m")
    api.member("n")  # the other side of a transfer
    api.award("m", 100)
    pending = api.award("m", 40, available_at="2026-02-01T00:00:00Z")["transaction_id"]
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10, "stock": 5})
    reward_id = reward.json()["data"]["reward_id"]
    redemption = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward_id})
    return {
        "member_id": "m",
        "transaction_id": pending,
        "reward_id": reward_id,
        "redemption_id": redemption.json()["data"]["redemption_id"],
        "endpoint_id": endpoint_id,
        "delivery_id": _first_delivery(api, endpoint_id),
    }


def _first_delivery(api: Api, endpoint_id: str) -> str:
    """The endpoint's delivery of its first event, made as the dispatcher makes them."""
    run_async(api.store, Ledger(api.store).webhooks.fan_out)
    found = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", per_page=100)
    return str(found.json()["data"][-1]["delivery_id"])


UNKNOWN_IDS = {
    "member_id": "ghost",
    "transaction_id": "txn_01NOSUCHTRANSACTION0000000",
    "reward_id": "rwd_01NOSUCHREWARD000000000000",
    "redemption_id": "red_01NOSUCHREDEMPTION00000000",
    "endpoint_id": "we_01NOSUCHENDPOINT000000000000",
    "delivery_id": "dlv_01NOSUCHDELIVERY00000000000",
}

# A body each write accepts.
VALID_BODIES: dict[tuple[str, str], Callable[[dict[str, str]], dict[str, Any] | None]] = {
    ("POST", "/v1/members"): lambda ids: {"member_id": "newcomer"},
    ("PATCH", "/v1/members/{member_id}"): lambda ids: {"name": "New name"},
    ("POST", "/v1/members/{member_id}/erase"): lambda ids: {},
    ("POST", "/v1/points/award"): lambda ids: {"member_id": "m", "points": 5, "reason": "x"},
    ("POST", "/v1/points/award/bulk"): lambda ids: {
        "awards": [{"member_id": "m", "points": 5, "reason": "x"}]
    },
    ("POST", "/v1/points/deduct"): lambda ids: {"member_id": "m", "points": 5, "reason": "x"},
    ("POST", "/v1/points/transfer"): lambda ids: {
        "from_member_id": "m",
        "to_member_id": "n",
        "points": 5,
        "reason": "x",
    },
    ("POST", "/v1/transactions/{transaction_id}/cancel"): lambda ids: {},
    ("POST", "/v1/transactions/{transaction_id}/reverse"): lambda ids: {
        "reason": "returned",
        "points": 1,
    },
    ("PATCH", "/v1/program"): lambda ids: {"points_expire_after_days": 30, "enrol_on_award": True},
    ("POST", "/v1/rewards"): lambda ids: {"name": "Cap", "points_cost": 20},
    ("PATCH", "/v1/rewards/{reward_id}"): lambda ids: {"name": "Big mug"},
    ("POST", "/v1/redemptions"): lambda ids: {"member_id": "m", "reward_id": ids["reward_id"]},
    ("POST", "/v1/redemptions/{redemption_id}/cancel"): lambda ids: {},
    ("POST", "/v1/webhook_endpoints"): lambda ids: {"url": "https://8.8.8.8/other"},
    ("PATCH", "/v1/webhook_endpoints/{endpoint_id}"): lambda ids: {"enabled": False},
    ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"): lambda ids: None,
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"): lambda ids: {},
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/retry"): lambda ids: {},
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/recover"): lambda ids: {
        "since": "2020-01-01T00:00:00Z"
    },
}

# A body each route that takes a file (not JSON) accepts.
FILE_BODIES = {("POST", "/v1/imports/awards"): b"member_id,points,reason\nm,5,x\n"}

BAD_QUERIES = [
    {"page": "0"},
    {"per_page": "101"},
    {"per_page": "ten"},
    {"type": "bonus"},
    {"from": "next week"},
    {"from": "2026-02-01", "to": "2026-01-01"},
    {"status": "lost"},
    {"as_of": "2999-01-01T00:00:00Z"},
    {"interval": "year"},
]


def battery(api: Api, route: RouteSpec, ids: dict[str, str]) -> dict[str, Sent]:
    """Requests for `route`: good ones, and every way its shape lets a request be wrong."""
    path, unknown_path = route.path.format(**ids), route.path.format(**UNKNOWN_IDS)
    file = FILE_BODIES.get((route.method, route.path))
    body = (
        None if route.scope is Scope.READ or file else VALID_BODIES[route.method, route.path](ids)
    )
    json_type = {"Content-Type": route.body_media_type or "application/json"}
    # A write's requests carry its valid body unless the body is what they get wrong.
    valid = file or (b"" if body is None else json.dumps(body).encode())
    good = Sent(path) if route.scope is Scope.READ else Sent(path, content=valid, headers=json_type)
    idempotent = replace(good, headers={**good.headers, "Idempotency-Key": "battery"})
    sent = {
        "valid, with an Idempotency-Key": idempotent,
        "the same again": idempotent,
        # the same fields, other bytes: another request to the fingerprint
        "the same key, another body": replace(idempotent, content=valid + b" "),
        "valid, again": good,
        "no key": replace(good, key=""),
        "an unknown key": replace(good, key=UNKNOWN_KEY),
        "a read key": replace(good, key=api.key_for("acme", Scope.READ)),
        "another program's key": replace(good, key=api.key_for("other")),
        "unknown ids in the path": replace(good, path=unknown_path),
        "a bad Idempotency-Key": replace(
            good, headers={**good.headers, "Idempotency-Key": "x" * 256}
        ),
        **{f"query {query}": replace(good, params=query) for query in BAD_QUERIES},
    }
    if route.scope is Scope.READ:
        return sent
    sent |= {
        "a body over the limit": replace(good, content=b'{"pad": "' + b"x" * LIMIT + b'"}'),
        "text/plain": replace(good, content=valid or b"{}", headers={"Content-Type": "text/plain"}),
        "no Content-Type": replace(good, content=valid or b"{}", headers={}),
        "invalid JSON": replace(good, content=b'{"member_id": '),
        "a JSON array": replace(good, content=b"[]"),
        "an empty body": replace(good, content=b""),
    }
    if body is not None:
        sent["an unknown field"] = Sent(path, body={**body, "typo": 1})
        sent |= {f"{name} of a wrong type": Sent(path, body={**body, name: [1]}) for name in body}
        named = {name: UNKNOWN_IDS[name] for name in body if name in UNKNOWN_IDS}
        sent["unknown ids in the body"] = Sent(path, body={**body, **named})
    return sent


def send(api: Api, route: RouteSpec, request: Sent) -> httpx.Response:
    headers = {**request.headers}
    if request.key != "":
        headers["Authorization"] = f"Bearer {request.key or api.key}"
    return api.client.request(
        route.method,
        request.path,
        json=None if request.content is not None else request.body,
        content=request.content,
        headers=headers,
        params=request.params or None,
    )


@pytest.mark.parametrize("route", ROUTES, ids=[f"{r.method} {r.path}" for r in ROUTES])
def test_every_status_a_route_answers_is_listed_in_its_openapi_entry(
    store: Store, clock: FakeClock, route: RouteSpec
) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock, max_body_bytes=LIMIT) as client:
        api = Api(client, key, store=store, clock=clock)
        ids = the_world(api)
        # This test checks the answers itself, to list every undocumented one at once.
        client.event_hooks["response"].remove(assert_documented)
        answers = {}
        for name, request in battery(api, route, ids).items():
            response = send(api, route, request)
            answers[name] = (response.status_code, error_code(response))
    operation = documented_operation(route.method, route.path.format(**ids))
    assert operation is not None and operation.template == route.path
    assert {name: answer for name, answer in answers.items() if not operation.lists(*answer)} == {}
    # The battery reached each kind of refusal the route's shape implies.
    answered = {status for status, _ in answers.values()}
    expected = ({401} if route.auth else set()) | ({404} if "{" in route.path else set())
    if route.scope is Scope.WRITE:
        expected |= {403, 413, 415}
    if route.body is not None:
        expected |= {400, 422}
    if route.body_media_type is not None:
        expected |= {422}
    if route.method == "POST" or route.query:
        expected |= {422}
    assert expected <= answered, answers


def test_every_operation_has_a_unique_snake_case_operation_id() -> None:
    document = openapi_document(ROUTES)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(ROUTES) == len(set(ids))
    assert all(re.fullmatch(r"[a-z][a-z_]*[a-z]", name) for name in ids), ids
    assert document["paths"]["/v1/points/award"]["post"]["operationId"] == "award"


def test_a_table_that_names_one_operation_twice_is_refused() -> None:
    twice = (*ROUTES, replace(ROUTES[0], path="/v1/elsewhere"))
    with pytest.raises(ValueError, match=ROUTES[0].operation_id):
        openapi_document(twice)


def test_no_two_routes_match_one_request_so_the_router_may_try_the_busiest_first() -> None:
    """The router tries `starlette_routes(ROUTES)` one by one and serves the first that matches
    both path and method: with no request matching two routes, that order changes nothing."""
    routes = starlette_routes(ROUTES)
    assert {(r.path, r.methods and min(r.methods)) for r in routes} == {
        (r.path, r.method) for r in ROUTES
    }
    for spec in ROUTES:
        path = re.sub(r"\{[a-z_]+\}", "x_1", spec.path)
        scope = {"type": "http", "method": spec.method, "path": path, "root_path": ""}
        full = [r.path for r in routes if r.matches(scope)[0] is Match.FULL]
        assert full == [spec.path], f"{spec.method} {path}"
    # And for any path: a parameter matches any one segment, so two routes of one method could
    # both match a request when their segments pair up, each pair equal or one a parameter.
    for n, one in enumerate(ROUTES):
        for other in ROUTES[n + 1 :]:
            if one.method == other.method:
                assert not _could_both_match(one.path, other.path), f"{one.path} {other.path}"


def _could_both_match(one: str, other: str) -> bool:
    mine, theirs = one.split("/"), other.split("/")
    return len(mine) == len(theirs) and all(
        a == b or a.startswith("{") or b.startswith("{") for a, b in zip(mine, theirs, strict=True)
    )
