"""Rate limits (api.md section 10): a token bucket per key and a budget of failed
authentications per client address, with the draft's RateLimit headers. The limiter's clock is
a fake one, moved by the tests; nothing sleeps."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tally.config import FAILED_AUTH_LIMIT, Rate, Settings
from tally.domain import Scope
from tally.http.limits import Buckets, RateLimits
from tally.http.openapi import openapi_document
from tally.http.routes import ROUTES
from tally.maintenance import create_key
from tally.ports import Store
from tests.support import Api, FakeClock, FakeTicks, serve_app
from tests.test_errors import assert_error

UNKNOWN = "tally_" + "U" * 43


def random_key(n: int) -> str:
    return "tally_" + f"{n:043d}"


# Settings


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/s", Rate(100, 200)),
        ("100/s:50", Rate(100, 50)),
        ("2.5/s", Rate(2.5, 5)),
        ("0.5/s", Rate(0.5, 1)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_tally_rate_limit_takes_a_rate_an_optional_burst_or_off(
    text: str, rate: Rate | None
) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["100", "100/m", "-1/s", "0/s", "10/s:0", "fast", ""])
def test_a_malformed_rate_limit_is_refused_saying_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="N/s, N/s:BURST"):
        Rate.parse(text)


def test_the_served_default_is_100_a_second_burst_200_and_off_turns_both_limits_off() -> None:
    served = Settings.from_env({})
    assert (served.rate_limit, served.failed_auth_limit) == (Rate(100, 200), FAILED_AUTH_LIMIT)
    off = Settings.from_env({"TALLY_RATE_LIMIT": "off"})
    assert (off.rate_limit, off.failed_auth_limit) == (None, None)
    assert Settings().rate_limit is None  # an app built in code (tests, benchmarks)


def test_cors_origins_are_a_comma_separated_list() -> None:
    settings = Settings.from_env({"TALLY_CORS_ORIGINS": " https://a.example, https://b.example,"})
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert Settings.from_env({}).cors_origins == ()


# Through the API: a key with 10 a second, burst 3; 2 failed authentications a second, burst 3.


@pytest.fixture
def ticks() -> FakeTicks:
    return FakeTicks()


@pytest.fixture
def limited(store: Store, clock: FakeClock, ticks: FakeTicks) -> Iterator[Api]:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(
        store,
        clock=clock,
        monotonic=ticks,
        rate_limit=Rate(10, 3),
        failed_auth_limit=Rate(2, 3),
    ) as client:
        yield Api(client, key, store=store, clock=clock)


POLICY = '"default";q=3;w=1, "failed-auth";q=3;w=2'


def test_each_answer_says_the_policy_and_what_is_left(limited: Api) -> None:
    answers = [limited.get("/v1/program") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.headers["ratelimit-policy"] for a in answers} == {POLICY}
    assert [a.headers["ratelimit"] for a in answers] == [
        '"default";r=2;t=1',
        '"default";r=1;t=1',
        '"default";r=0;t=1',
    ]


def test_a_key_over_its_limit_is_refused_429_with_retry_after_until_a_token_returns(
    limited: Api, ticks: FakeTicks
) -> None:
    for _ in range(3):
        assert limited.get("/v1/program").status_code == 200
    refused = limited.post("/v1/members", {"member_id": "m"})
    error = assert_error(refused, 429, "rate_limited")
    assert "3 at once and 10 a second" in error["message"]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit"] == '"default";r=0;t=1'
    assert refused.headers["ratelimit-policy"] == POLICY
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert limited.get("/v1/members/m").status_code == 429  # and nothing was enrolled
    ticks.advance(0.1)  # one token back
    assert limited.get("/v1/members/m").status_code == 404
    assert limited.get("/v1/program").status_code == 429
    ticks.advance(10)
    assert [limited.get("/v1/program").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_every_kind_of_v1_answer_carries_the_headers(limited: Api, ticks: FakeTicks) -> None:
    answers = {
        "a success": limited.get("/v1/program"),
        "a validation error": limited.post("/v1/points/award", {"member_id": "m"}),
        "an unknown member": limited.get("/v1/members/ghost"),
    }
    ticks.advance(10)
    answers["an unknown route"] = limited.get("/v1/nothing")
    answers["no key"] = limited.client.get("/v1/program")
    for name, response in answers.items():
        assert response.headers["ratelimit-policy"] == POLICY, name
        assert response.headers["ratelimit"].startswith('"default";r='), name


def test_other_routes_are_not_limited(limited: Api) -> None:
    for path in ("/openapi.json", "/docs"):
        answers = [limited.client.get(path) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5, path
        assert "ratelimit" not in answers[-1].headers


def test_keys_have_buckets_of_their_own(limited: Api) -> None:
    other = limited.key_for("other")
    for _ in range(3):
        assert limited.get("/v1/program").status_code == 200
    assert limited.get("/v1/program").status_code == 429
    assert limited.get("/v1/program", key=other).status_code == 200


def test_how_a_key_is_written_does_not_give_it_another_bucket(limited: Api) -> None:
    spellings = ["Bearer {k}", "bearer {k}", "BEARER  {k} ", "Bearer {k}"]
    answers = [
        limited.client.get("/v1/program", headers={"Authorization": s.format(k=limited.key)})
        for s in spellings
    ]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]


def test_failed_authentications_from_an_address_are_refused_before_the_database(
    limited: Api, ticks: FakeTicks
) -> None:
    answers = [limited.get("/v1/program", key=random_key(n)) for n in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert answers[-1].headers["ratelimit"].endswith('"failed-auth";r=0;t=2')
    # Spent: a new random key is refused without being looked up (it would be a 401).
    refused = limited.get("/v1/program", key=random_key(3))
    error = assert_error(refused, 429, "rate_limited")
    assert "failed authentications" in error["message"]
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["ratelimit"] == '"failed-auth";r=0;t=1'
    assert limited.client.get("/v1/program").status_code == 429  # no key at all: the same
    ticks.advance(0.5)  # one failure back (2 a second)
    assert limited.get("/v1/program", key=random_key(4)).status_code == 401
    assert limited.get("/v1/program", key=random_key(5)).status_code == 429


def test_a_key_that_has_authenticated_keeps_working_while_its_address_is_refused(
    limited: Api, ticks: FakeTicks
) -> None:
    newcomer = limited.key_for("newcomer")
    assert limited.get("/v1/program").status_code == 200  # proven in this process
    for n in range(3):
        limited.get("/v1/program", key=random_key(n))
    assert limited.get("/v1/program", key=random_key(3)).status_code == 429
    assert limited.get("/v1/program").status_code == 200
    assert limited.get("/v1/program", key=newcomer).status_code == 429  # not yet proven


def test_a_revoked_key_loses_its_proof(store: Store, clock: FakeClock, ticks: FakeTicks) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock())
    with serve_app(
        store, clock=clock, monotonic=ticks, key_cache_seconds=0, failed_auth_limit=Rate(1, 1)
    ) as client:
        api = Api(client, key.secret, store=store, clock=clock)
        assert api.get("/v1/program").status_code == 200
        store.transact(lambda tx: tx.keys.revoke(key.key_id, now=clock()))
        assert api.get("/v1/program").status_code == 401
        assert api.get("/v1/program").status_code == 429


def test_every_v1_route_lists_429_with_retry_after_and_the_rate_limit_headers() -> None:
    document = openapi_document(ROUTES)
    for route in ROUTES:
        if not route.path.startswith("/v1/"):
            continue
        responses = document["paths"][route.path][route.method.lower()]["responses"]
        assert "rate_limited" in responses["429"]["description"], route.path
        assert {"Retry-After", "RateLimit", "RateLimit-Policy"} <= set(responses["429"]["headers"])
        assert {"RateLimit", "RateLimit-Policy"} <= set(responses[str(route.status)]["headers"])
    assert {"RateLimit", "RateLimit-Policy"} <= set(document["components"]["headers"])


# The middleware alone, in front of a small fake app: addresses, capacity.


@dataclass
class Answer:
    status: int
    headers: dict[str, str]


class FakeApi:
    """Answers 200 to the key `good`, 401 to any other, as a route would (`endpoint` set)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["endpoint"] = self
        authorization = dict(scope["headers"]).get(b"authorization", b"")
        status = 200 if authorization == b"Bearer good" else 401
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def call(app: RateLimits, *, key: str, address: str = "10.0.0.1") -> Answer:
    scope = {
        "type": "http",
        "path": "/v1/program",
        "client": (address, 1234),
        "headers": [(b"authorization", f"Bearer {key}".encode())],
    }
    started: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(message)

    asyncio.run(app(scope, receive, send))
    headers = {name.decode(): value.decode() for name, value in started[0]["headers"]}
    return Answer(started[0]["status"], headers)


def test_failed_authentications_are_counted_per_address() -> None:
    ticks = FakeTicks()
    app = RateLimits(FakeApi(), per_key=None, failed_auth=Rate(1, 2), clock=ticks)
    assert [call(app, key=f"bad{n}").status for n in range(3)] == [401, 401, 429]
    assert call(app, key="good").status == 429  # not proven yet: refused with the rest
    assert call(app, key="bad", address="10.0.0.2").status == 401
    assert call(app, key="good", address="10.0.0.2").status == 200
    assert call(app, key="good").status == 200  # proven now, from wherever it comes


def test_buckets_are_bounded_and_forget_the_least_recently_used() -> None:
    ticks = FakeTicks()
    buckets = Buckets(Rate(1, 2), name="default", capacity=2)
    for partition in ("a", "b", "a", "c"):
        buckets.spend(partition, ticks())
    assert len(buckets) == 2
    assert buckets.find("b", ticks()) is None  # forgotten: comes back full
    assert buckets.find("a", ticks()) is not None


def test_a_flood_of_keys_holds_at_most_the_capacity_in_memory() -> None:
    app = RateLimits(FakeApi(), per_key=Rate(1, 1), failed_auth=None, clock=FakeTicks(), capacity=5)
    for n in range(50):
        call(app, key=f"k{n}")
    assert len(app._keys or ()) == 5


def test_the_headers_follow_draft_11_syntax(limited: Api) -> None:
    response: httpx.Response = limited.get("/v1/program")
    item = r'"[a-z-]+";(?:[a-z]+=\d+;?)+'
    for name in ("ratelimit-policy", "ratelimit"):
        for part in response.headers[name].split(", "):
            assert re.fullmatch(item, part), (name, part)
