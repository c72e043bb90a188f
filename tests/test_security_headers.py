"""What every answer tells a browser (api.md section 10, docs/api.md "Headers"): no sniffing,
no referrer, no framing, a content security policy, no caching of /v1, and CORS only when
configured."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from tally.domain import Scope
from tally.maintenance import create_key
from tally.ports import Store, Tx
from tests.support import Api, FakeClock, serve_app

T = TypeVar("T")

EVERYWHERE = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"


def assert_secured(response: httpx.Response, *, policy: str = JSON_POLICY) -> None:
    assert {name: response.headers.get(name) for name in EVERYWHERE} == EVERYWHERE
    assert response.headers["content-security-policy"] == policy
    assert "server" not in response.headers


class BrokenReads:
    """A store whose reads fail the way a bug does (an unexpected exception); the rest is the
    real store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def read(self, work: Callable[[Tx], T]) -> T:
        raise RuntimeError("a bug in a read")


def answers(api: Api) -> dict[str, httpx.Response]:
    """One answer of each kind: successes, refusals, unknown routes, documents."""
    api.member("m")
    return {
        "a read": api.get("/v1/members/m/balance"),
        "a write": api.post("/v1/members", {"member_id": "n"}),
        "a refused key": api.get("/v1/members", key="tally_" + "A" * 43),
        "a validation error": api.post("/v1/points/award", {"member_id": "m"}),
        "an unknown route": api.get("/v1/nothing-here"),
        "an unknown route outside /v1": api.get("/nothing-here"),
        "a method not allowed": api.client.delete("/v1/members", headers=api.headers()),
        "the OpenAPI document": api.client.get("/openapi.json"),
    }


def test_every_answer_carries_the_security_headers(api: Api) -> None:
    for name, response in answers(api).items():
        assert response.status_code < 500, name
        assert_secured(response)


def test_answers_under_v1_are_never_stored_by_a_cache(api: Api) -> None:
    for name, response in answers(api).items():
        assert response.headers["cache-control"] == "no-store", name


def test_a_bug_is_answered_500_with_the_security_headers(store: Store, clock: FakeClock) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(BrokenReads(store), clock=clock) as client:  # type: ignore[arg-type]
        response = client.get("/v1/members", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text
    assert_secured(response)
    assert response.headers["cache-control"] == "no-store"


def test_the_docs_page_may_load_only_its_own_scripts_and_styles(api: Api) -> None:
    response = api.client.get("/docs")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert_secured(response, policy=policy)
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-eval" not in policy


def test_the_console_may_load_only_its_own_files_and_talk_only_to_this_server(api: Api) -> None:
    response = api.client.get("/console")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert_secured(response, policy=policy)
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for source in ("script-src", "style-src", "img-src", "connect-src"):
        assert directives[source] == "'self'", source
    assert directives["form-action"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert "unsafe" not in policy
    assert response.headers["cross-origin-opener-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-cache"
    for path in ("/console/app.js", "/console/console.css"):
        served = api.client.get(path)
        assert served.status_code == 200
        assert_secured(served)  # a file: nothing of its own to load or run
        assert served.headers["cache-control"] == "no-cache"
    assert api.client.get("/console/secrets.txt").status_code == 404


def test_without_cors_origins_no_answer_allows_another_origin(api: Api) -> None:
    api.member("m")
    origin = {"Origin": "https://shop.example"}
    response = api.client.get("/v1/members/m", headers={**api.headers(), **origin})
    assert response.status_code == 200
    assert not [name for name in response.headers if name.startswith("access-control-")]
    preflight = api.client.options(
        "/v1/members",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


@pytest.fixture
def cors_api(store: Store, clock: FakeClock) -> Iterator[Api]:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock, cors_origins=("https://shop.example",)) as client:
        yield Api(client, key, store=store, clock=clock)


def test_cors_origins_are_allowed_and_may_read_the_rate_limit_and_request_id(
    cors_api: Api,
) -> None:
    api = cors_api
    preflight = api.client.options(
        "/v1/points/award",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert_secured(preflight)
    api.member("m")
    response = api.client.get(
        "/v1/members/m", headers={**api.headers(), "Origin": "https://shop.example"}
    )
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    exposed = {
        h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")
    }
    assert {"ratelimit", "ratelimit-policy", "retry-after", "x-request-id"} <= exposed


def test_cors_refuses_an_origin_not_listed(cors_api: Api) -> None:
    preflight = cors_api.client.options(
        "/v1/points/award",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
