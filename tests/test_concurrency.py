"""Concurrency against real servers: one process, several workers, several servers.

Each test releases its requests together (a barrier) at real `tally serve` processes and then
checks the ledger: no overdraw, no lost update, no double effect, and `verify` finds nothing.
(Killing a server with writes in flight is `test_crash.py`.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tally.domain import Scope
from tally.maintenance import create_key, verify
from tally.storage import open_store
from tests.support import Server, start_server

TOPOLOGIES = {
    "one-process": (1, 1),
    "two-workers": (2, 1),
    "two-servers": (1, 2),
}


@dataclass
class Cluster:
    """Real servers on one database, and a write key of one program."""

    database_url: str
    servers: list[Server]
    key: str

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def post(self, index: int, path: str, body: Any, **headers: str) -> httpx.Response:
        url = self.urls[index % len(self.urls)] + path
        auth = {"Authorization": f"Bearer {self.key}", **headers}
        return httpx.post(url, json=body, headers=auth, timeout=60)

    def get(self, path: str, **params: Any) -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.key}"}
        return httpx.get(self.urls[0] + path, headers=auth, params=params, timeout=60)


@pytest.fixture(params=list(TOPOLOGIES))
def cluster(request: pytest.FixtureRequest, database_url: str) -> Iterator[Cluster]:
    workers, count = TOPOLOGIES[request.param]
    store = open_store(database_url)
    store.migrate()
    key = create_key(store, program="race", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    store.close()
    servers = [start_server(database_url, workers=workers) for _ in range(count)]
    try:
        yield Cluster(database_url, servers, key)
    finally:
        for server in servers:
            server.stop()


def all_at_once(count: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """Run `call(i)` for i in range(count) on `count` threads released together."""
    barrier = threading.Barrier(count, timeout=30)

    def run(index: int) -> httpx.Response:
        barrier.wait()
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def ledger_is_consistent(database_url: str) -> bool:
    store = open_store(database_url)
    try:
        return verify(store) == []
    finally:
        store.close()


def test_forty_deducts_racing_for_ten_deducts_worth_never_overdraw(cluster: Cluster) -> None:
    assert cluster.post(0, "/v1/members", {"member_id": "m"}).status_code == 201
    award = {"member_id": "m", "points": 100, "reason": "stock"}
    assert cluster.post(0, "/v1/points/award", award).status_code == 201
    deduct = {"member_id": "m", "points": 10, "reason": "race"}
    responses = all_at_once(40, lambda i: cluster.post(i, "/v1/points/deduct", deduct))
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 10 + [422] * 30
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 422} == {
        "insufficient_points"
    }
    balances = sorted(r.json()["data"]["new_balance"] for r in responses if r.status_code == 201)
    assert balances == list(range(0, 100, 10))
    assert cluster.get("/v1/members/m/balance").json()["data"]["balance"] == 0
    assert ledger_is_consistent(cluster.database_url)


def test_a_hundred_concurrent_awards_to_one_member_are_all_counted(cluster: Cluster) -> None:
    assert cluster.post(0, "/v1/members", {"member_id": "m"}).status_code == 201
    responses = all_at_once(
        100,
        lambda i: cluster.post(
            i, "/v1/points/award", {"member_id": "m", "points": i + 1, "reason": f"award {i}"}
        ),
    )
    assert [r.status_code for r in responses] == [201] * 100
    balance = cluster.get("/v1/members/m/balance").json()["data"]
    assert balance["balance"] == balance["lifetime_earned"] == sum(range(1, 101))
    history = cluster.get("/v1/members/m/transactions", per_page=100).json()
    assert history["meta"]["total"] == 100
    rows = history["data"]
    for newer, older in zip(rows, rows[1:], strict=False):
        assert newer["balance_after"] == older["balance_after"] + newer["points"]
    assert ledger_is_consistent(cluster.database_url)


def test_two_dozen_retries_of_one_idempotency_key_have_exactly_one_effect(
    cluster: Cluster,
) -> None:
    assert cluster.post(0, "/v1/members", {"member_id": "m"}).status_code == 201
    award = {"member_id": "m", "points": 250, "reason": "once"}
    responses = all_at_once(
        24, lambda i: cluster.post(i, "/v1/points/award", award, **{"Idempotency-Key": "k-1"})
    )
    created = [r for r in responses if r.status_code == 201]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(created) + len(in_progress) == 24 and created
    assert {r.json()["error"]["code"] for r in in_progress} <= {"idempotency_in_progress"}
    assert len({r.content for r in created}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in created) <= 1
    assert cluster.get("/v1/members/m/balance").json()["data"]["balance"] == 250
    replay = cluster.post(1, "/v1/points/award", award, **{"Idempotency-Key": "k-1"})
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == created[0].content
    assert cluster.get("/v1/members/m/transactions").json()["meta"]["total"] == 1


def test_a_revoked_key_is_refused_within_a_second_by_every_server(cluster: Cluster) -> None:
    for index in range(len(cluster.urls) * 4):  # warm every process's key cache
        assert cluster.post(index, "/v1/members", {}).status_code == 201
    store = open_store(cluster.database_url)
    key_id = store.transact(lambda tx: tx.keys.all())[0].id
    store.transact(lambda tx: tx.keys.revoke(key_id, now=datetime.now(UTC)))
    store.close()
    deadline = time.monotonic() + 1.0
    # Until the second is up, a process may still trust its cached verification.
    while time.monotonic() < deadline:
        cluster.post(0, "/v1/members", {})
    # From then on every process of every server refuses it.
    for index in range(len(cluster.urls) * 16):
        assert cluster.post(index, "/v1/members", {}).status_code == 401
