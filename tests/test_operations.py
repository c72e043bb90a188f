"""Operations (api.md section 11): /healthz, /readyz and /metrics, outside /v1, without a key."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tally.config import Rate
from tally.domain import Scope
from tally.errors import Unavailable
from tally.maintenance import create_key
from tally.ports import Store, Tx
from tally.storage import open_store
from tests.conftest import POSTGRES_URL
from tests.support import Api, FakeClock, FakeTicks, postgres_copy, serve_app
from tests.test_errors import assert_error

T = TypeVar("T")


def samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels); the text must parse as Prometheus'."""
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_of(api: Api, route: str, status: str, method: str = "GET") -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples(api).get(("tally_http_requests_total", labels), 0.0)


def test_healthz_answers_without_a_key(api: Api) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"status": "ok"}}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_answers_when_the_database_is_migrated(api: Api) -> None:
    response = api.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["data"] == {"status": "ready"}


@pytest.fixture
def unmigrated(database_url: str, tmp_path: Any) -> Iterator[Store]:
    """A store on a database that exists but was never migrated."""
    if database_url.startswith("sqlite"):
        store = open_store(f"sqlite:///{tmp_path}/empty.db")
        yield store
        store.close()
        return
    assert POSTGRES_URL is not None
    with postgres_copy(POSTGRES_URL, None, prefix="tally_unmigrated") as url:
        store = open_store(url)
        yield store
        store.close()


def test_readyz_is_503_unavailable_on_a_database_not_migrated(
    unmigrated: Store, clock: FakeClock
) -> None:
    with serve_app(unmigrated, clock=clock) as client:
        response = client.get("/readyz")
        assert_error(response, 503, "unavailable")
        assert response.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 200  # alive all the same
        exposition = client.get("/metrics").text
    assert 'tally_database_unavailable_total{cause="' in exposition


def test_operations_are_never_rate_limited(store: Store, clock: FakeClock) -> None:
    with serve_app(store, clock=clock, monotonic=FakeTicks(), rate_limit=Rate(1, 1)) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            answers = [client.get(path) for _ in range(3)]
            assert [a.status_code for a in answers] == [200] * 3, path
            assert "ratelimit" not in answers[-1].headers


def test_requests_are_counted_by_route_template_and_status_never_by_path(api: Api) -> None:
    api.member("m-7f3a")
    api.get("/v1/members/m-7f3a/balance")
    api.get("/v1/members/m-7f3a/balance")
    api.get("/v1/members/ghost-9e1/balance")
    api.get("/v1/no-such-route/x-5d2")
    route = "/v1/members/{member_id}/balance"
    assert requests_of(api, route, "200") == 2
    assert requests_of(api, route, "404") == 1
    assert requests_of(api, "unmatched", "404") == 1
    assert requests_of(api, "/v1/members", "201", method="POST") == 1
    text = api.client.get("/metrics").text
    for raw in ("m-7f3a", "ghost-9e1", "x-5d2", "acme"):
        assert raw not in text


def test_latency_is_a_histogram_of_each_route_and_status(api: Api) -> None:
    api.get("/v1/program")
    found = samples(api)
    labels = (("method", "GET"), ("route", "/v1/program"), ("status", "200"))
    assert found[("tally_http_request_duration_seconds_count", labels)] == 1
    assert found[("tally_http_request_duration_seconds_sum", labels)] > 0
    inf = tuple(sorted((*labels, ("le", "+Inf"))))
    assert found[("tally_http_request_duration_seconds_bucket", inf)] == 1


def test_a_method_no_route_knows_is_one_label_not_one_per_spelling(api: Api) -> None:
    for method in ("BREW", "PROPFIND", "X-1"):
        api.client.request(method, "/v1/program", headers=api.headers())
    assert requests_of(api, "/v1/program", "405", method="OTHER") == 3


class BusyReads:
    """A store whose reads find the database busy, as SQLite's translation reports it."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def read(self, work: Callable[[Tx], T]) -> T:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as error:
            raise Unavailable("The database is busy; nothing was changed.") from error


def test_503s_are_counted_by_the_class_of_the_error_underneath(
    store: Store, clock: FakeClock
) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(BusyReads(store), clock=clock) as client:  # type: ignore[arg-type]
        api = Api(client, key, store=store, clock=clock)
        assert_error(api.get("/v1/members"), 503, "unavailable")
        found = samples(api)
    assert found[("tally_database_unavailable_total", (("cause", "OperationalError"),))] == 1


def test_rate_limit_refusals_are_counted_by_policy(store: Store, clock: FakeClock) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock, monotonic=FakeTicks(), rate_limit=Rate(1, 1)) as client:
        api = Api(client, key, store=store, clock=clock)
        assert [api.get("/v1/program").status_code for _ in range(3)] == [200, 429, 429]
        assert samples(api)[("tally_rate_limited_total", (("policy", "default"),))] == 2
        assert requests_of(api, "/v1/program", "429") == 2  # matched though never routed


def test_group_commits_are_read_from_the_sqlite_store(api: Api, database_url: str) -> None:
    api.member("m")
    api.award("m", 5)
    found = samples(api)
    if database_url.startswith("sqlite"):
        commits = found[("tally_sqlite_group_commits_total", ())]
        assert commits >= 2
        assert found[("tally_sqlite_group_committed_writes_total", ())] >= commits
    else:
        assert ("tally_sqlite_group_commits_total", ()) not in found


def test_each_app_counts_in_a_registry_of_its_own(store: Store, clock: FakeClock) -> None:
    counts = []
    for _ in range(2):
        with serve_app(store, clock=clock) as client:
            client.get("/healthz")
            api = Api(client, "", store=store, clock=clock)
            counts.append(requests_of(api, "/healthz", "200"))
    assert counts == [1, 1]
