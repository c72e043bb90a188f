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
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tally.domain import Profile, Scope
from tally.maintenance import create_key, verify
from tally.ports import Tx
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
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in created) == 1
    assert cluster.get("/v1/members/m/balance").json()["data"]["balance"] == 250
    replay = cluster.post(1, "/v1/points/award", award, **{"Idempotency-Key": "k-1"})
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == created[0].content
    assert cluster.get("/v1/members/m/transactions").json()["meta"]["total"] == 1


def funded_members(cluster: Cluster, count: int, points: int) -> list[str]:
    """`count` new members with `points` each."""
    names = [f"r{i:02}" for i in range(count)]
    for name in names:
        assert cluster.post(0, "/v1/members", {"member_id": name}).status_code == 201
    awards = [{"member_id": name, "points": points, "reason": "funds"} for name in names]
    funded = cluster.post(0, "/v1/points/award/bulk", {"awards": awards})
    assert funded.status_code == 200 and funded.json()["data"]["processed"] == count
    return names


def new_reward(cluster: Cluster, **fields: Any) -> str:
    response = cluster.post(0, "/v1/rewards", {"name": "Mug", "points_cost": 40, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["reward_id"])


def test_thirty_members_racing_for_ten_in_stock_get_exactly_ten(cluster: Cluster) -> None:
    names = funded_members(cluster, 30, 100)
    reward_id = new_reward(cluster, stock=10)
    responses = all_at_once(
        30,
        lambda i: cluster.post(
            i, "/v1/redemptions", {"member_id": names[i], "reward_id": reward_id}
        ),
    )
    codes = [r.status_code for r in responses]
    assert sorted(codes) == [201] * 10 + [422] * 20
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 422} == {
        "out_of_stock"
    }
    assert cluster.get(f"/v1/rewards/{reward_id}").json()["data"]["stock"] == 0
    for name, code in zip(names, codes, strict=True):
        balance = cluster.get(f"/v1/members/{name}/balance").json()["data"]
        spent = 40 if code == 201 else 0
        assert (balance["balance"], balance["lifetime_redeemed"]) == (100 - spent, spent)
    assert ledger_is_consistent(cluster.database_url)


def test_thirty_concurrent_redemptions_of_an_unlimited_reward_all_succeed(
    cluster: Cluster,
) -> None:
    names = funded_members(cluster, 30, 100)
    reward_id = new_reward(cluster)
    responses = all_at_once(
        30,
        lambda i: cluster.post(
            i, "/v1/redemptions", {"member_id": names[i], "reward_id": reward_id}
        ),
    )
    assert [r.status_code for r in responses] == [201] * 30, responses[0].text
    assert cluster.get(f"/v1/rewards/{reward_id}").json()["data"]["stock"] is None
    for name in names:
        balance = cluster.get(f"/v1/members/{name}/balance").json()["data"]
        assert (balance["balance"], balance["lifetime_redeemed"]) == (60, 40)
    assert ledger_is_consistent(cluster.database_url)


def test_cancels_racing_for_each_redemption_refund_each_exactly_once(cluster: Cluster) -> None:
    """Four redemptions, each cancelled eight times at once (32 requests together): each is
    refunded once, every other cancel is not_cancellable."""
    (name,) = funded_members(cluster, 1, 200)
    reward_id = new_reward(cluster, stock=4)
    paths = []
    for _ in range(4):
        made = cluster.post(0, "/v1/redemptions", {"member_id": name, "reward_id": reward_id})
        assert made.status_code == 201, made.text
        paths.append(f"/v1/redemptions/{made.json()['data']['redemption_id']}/cancel")
    responses = all_at_once(32, lambda i: cluster.post(i, paths[i % 4], None))
    for which in range(4):
        mine = responses[which::4]
        assert sorted(r.status_code for r in mine) == [200] + [409] * 7
        assert {r.json()["error"]["code"] for r in mine if r.status_code == 409} == {
            "not_cancellable"
        }
    assert_refunded_once(cluster, name, reward_id, points=200, redemptions=4, stock=4)


def test_ten_retries_of_one_cancel_at_once_refund_it_exactly_once(cluster: Cluster) -> None:
    """The same cancel sent ten times with one Idempotency-Key: one runs, the others replay
    its answer or are told it is still in progress."""
    (name,) = funded_members(cluster, 1, 100)
    reward_id = new_reward(cluster, stock=3)
    made = cluster.post(0, "/v1/redemptions", {"member_id": name, "reward_id": reward_id})
    assert made.status_code == 201, made.text
    path = f"/v1/redemptions/{made.json()['data']['redemption_id']}/cancel"
    responses = all_at_once(
        10, lambda i: cluster.post(i, path, None, **{"Idempotency-Key": "cancel-1"})
    )
    done = [r for r in responses if r.status_code == 200]
    waiting = [r for r in responses if r.status_code == 409]
    assert len(done) + len(waiting) == 10
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in done) == 1
    assert len({r.content for r in done}) == 1
    assert {r.json()["error"]["code"] for r in waiting} <= {"idempotency_in_progress"}
    assert_refunded_once(cluster, name, reward_id, points=100, redemptions=1, stock=3)


def assert_refunded_once(
    cluster: Cluster, member_id: str, reward_id: str, *, points: int, redemptions: int, stock: int
) -> None:
    """Every redemption was refunded once: points, counters, history and stock as before."""
    balance = cluster.get(f"/v1/members/{member_id}/balance").json()["data"]
    assert (balance["balance"], balance["lifetime_redeemed"]) == (points, 0)
    history = cluster.get(f"/v1/members/{member_id}/transactions").json()["data"]
    types = [row["type"] for row in history]
    assert (types.count("refund"), types.count("redeem")) == (redemptions, redemptions)
    assert cluster.get(f"/v1/rewards/{reward_id}").json()["data"]["stock"] == stock
    assert ledger_is_consistent(cluster.database_url)


def test_a_revoked_key_is_refused_within_a_second_by_every_server(cluster: Cluster) -> None:
    """Every process caches verified keys (0.5 s by default). After the revocation, requests
    go to every server until each has refused a run of them; whatever was still accepted was
    sent less than a second after the revocation. Nothing waits for the second to pass."""
    for index in range(len(cluster.urls) * 4):  # warm every process's key cache
        assert cluster.post(index, "/v1/members", {}).status_code == 201
    store = open_store(cluster.database_url)
    key_id = store.transact(lambda tx: tx.keys.all())[0].id
    store.transact(lambda tx: tx.keys.revoke(key_id, now=datetime.now(UTC)))
    store.close()
    revoked_at = time.monotonic()
    refusals = [0] * len(cluster.urls)  # the current run of refusals from each server
    last_accepted = revoked_at
    deadline = revoked_at + 30
    while min(refusals) < 16:  # a run long enough to reach both workers of a server
        assert time.monotonic() < deadline, "a server kept accepting the revoked key"
        for index in range(len(cluster.urls)):
            sent = time.monotonic()
            status = cluster.post(index, "/v1/members", {}).status_code
            assert status in (201, 401)
            if status == 201:
                refusals[index] = 0
                last_accepted = max(last_accepted, sent)
            else:
                refusals[index] += 1
    assert last_accepted - revoked_at < 1.0


def test_overlapping_bulk_awards_in_opposite_orders_all_apply_round_after_round(
    database_url: str,
) -> None:
    """Two servers, two bulk awards at once over 1,200 members each (more than one query's
    worth of row locks), sharing 900 and listing them in opposite orders: every round both
    apply in full (no deadlock, no lost update)."""
    names = [f"m{i:04}" for i in range(1_500)]
    store = open_store(database_url)
    store.migrate()
    key = create_key(store, program="race", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    program_id = store.transact(lambda tx: tx.programs.ensure("race", now=datetime.now(UTC))).id

    def enrol(tx: Tx) -> None:
        for name in names:
            tx.members.insert(program_id, Profile(name), now=datetime.now(UTC))

    store.transact(enrol)
    orders = [names[:1_200], names[300:][::-1]]
    cluster = Cluster(database_url, [start_server(database_url) for _ in range(2)], key)
    rounds = 5
    try:
        for _ in range(rounds):
            responses = all_at_once(
                2,
                lambda i: cluster.post(
                    i,
                    "/v1/points/award/bulk",
                    {"awards": [{"member_id": m, "points": 1, "reason": "b"} for m in orders[i]]},
                ),
            )
            assert [r.status_code for r in responses] == [200, 200], responses[0].text
            assert [
                (r.json()["data"]["processed"], r.json()["data"]["failed"]) for r in responses
            ] == [
                (1_200, 0),
                (1_200, 0),
            ]
    finally:
        for server in cluster.servers:
            server.stop()
    everyone = store.transact(lambda tx: tx.members.page(program_id, offset=0, limit=2_000))
    store.close()
    assert {m.member_id: m.account.balance for m in everyone} == {
        name: rounds * sum(name in order for order in orders) for name in names
    }
    assert ledger_is_consistent(database_url)


def test_transfers_racing_in_every_direction_never_deadlock_overdraw_or_lose_a_point(
    cluster: Cluster,
) -> None:
    """Sixty transfers among three members at once, in both directions of every pair: each is
    accepted or refused for want of points (a deadlock surfacing as 503 would fail), no balance
    goes below zero, and each member ends with exactly what the accepted transfers say."""
    members = ["a", "b", "c"]
    soon = (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z")
    for member in members:
        assert cluster.post(0, "/v1/members", {"member_id": member}).status_code == 201
        for points, expires in ((60, soon), (40, None)):
            award = {"member_id": member, "points": points, "reason": "stock"}
            if expires:
                award["expires_at"] = expires
            assert cluster.post(0, "/v1/points/award", award).status_code == 201
    pairs = [(s, r) for s in members for r in members if s != r]
    moves = [(*pairs[i % len(pairs)], 15 + i % 4 * 5) for i in range(60)]  # 15 to 30 points

    def transfer(i: int) -> httpx.Response:
        sender, receiver, points = moves[i]
        body = {"from_member_id": sender, "to_member_id": receiver, "points": points, "reason": "r"}
        return cluster.post(i, "/v1/points/transfer", body)

    responses = all_at_once(len(moves), transfer)
    outcomes = [(r.status_code, r.json().get("error", {}).get("code")) for r in responses]
    assert set(outcomes) <= {(201, None), (422, "insufficient_points")}, outcomes
    accepted = [move for move, r in zip(moves, responses, strict=True) if r.status_code == 201]
    assert accepted
    expected = dict.fromkeys(members, 100)
    for sender, receiver, points in accepted:
        expected[sender] -= points
        expected[receiver] += points
    balances = {m: cluster.get(f"/v1/members/{m}/balance").json()["data"] for m in members}
    assert {m: b["balance"] for m, b in balances.items()} == expected
    assert sum(expected.values()) == 300
    for member, balance in balances.items():
        sent = sum(p for s, _, p in accepted if s == member)
        received = sum(p for _, r, p in accepted if r == member)
        assert (balance["lifetime_transferred_out"], balance["lifetime_transferred_in"]) == (
            sent,
            received,
        )
    # Every accepted transfer's rows chain: each member's balance_after values are all distinct
    # steps of one ledger, never below zero.
    for member in members:
        rows = cluster.get(f"/v1/members/{member}/transactions", per_page=100).json()["data"]
        assert all(row["balance_after"] >= 0 for row in rows)
        for newer, older in zip(rows, rows[1:], strict=False):
            assert newer["balance_after"] == older["balance_after"] + newer["points"]
    assert ledger_is_consistent(cluster.database_url)


def _award(cluster: Cluster, member: str, points: int) -> str:
    if cluster.post(0, "/v1/members", {"member_id": member}).status_code != 201:
        raise AssertionError(f"could not enrol {member}")
    award = {"member_id": member, "points": points, "reason": "order"}
    response = cluster.post(0, "/v1/points/award", award)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["transaction_id"])


def test_reversals_racing_for_one_award_never_reverse_it_twice(cluster: Cluster) -> None:
    """Twelve whole reversals of one award at once: exactly one is made, the others find it
    reversed (409). Then twenty reversals of 30 points of another award of 100: exactly three
    are made, the others find only 10 left (422), and 10 stay."""
    whole = _award(cluster, "m", 100)
    body = {"reason": "returned"}
    responses = all_at_once(
        12, lambda i: cluster.post(i, f"/v1/transactions/{whole}/reverse", body)
    )
    outcomes = sorted((r.status_code, r.json().get("error", {}).get("code")) for r in responses)
    assert outcomes == [(201, None)] + [(409, "not_reversible")] * 11
    partial = _award(cluster, "n", 100)
    body = {"reason": "returned", "points": 30}
    responses = all_at_once(
        20, lambda i: cluster.post(i, f"/v1/transactions/{partial}/reverse", body)
    )
    outcomes = sorted((r.status_code, r.json().get("error", {}).get("code")) for r in responses)
    assert outcomes == [(201, None)] * 3 + [(422, "validation_error")] * 17
    after = sorted(r.json()["data"]["balance_after"] for r in responses if r.status_code == 201)
    assert after == [10, 40, 70]
    for member, transaction_id, balance in (("m", whole, 0), ("n", partial, 10)):
        state = cluster.get(f"/v1/members/{member}/balance").json()["data"]
        assert (state["balance"], state["lifetime_earned"]) == (balance, balance)
        original = cluster.get(f"/v1/transactions/{transaction_id}").json()["data"]
        assert original["points_reversed"] == 100 - balance
    assert ledger_is_consistent(cluster.database_url)


def test_a_reversal_racing_a_deduct_never_overdraws_without_allow_negative(
    cluster: Cluster,
) -> None:
    """Ten members each hold one award of 100; for each, a reversal of the whole award and a
    deduct of 60 are sent at once. Exactly one of each pair is made (whichever comes first
    leaves too little for the other), and no balance goes below zero."""
    members = [f"m{i}" for i in range(10)]
    awards = {member: _award(cluster, member, 100) for member in members}

    def send(i: int) -> httpx.Response:
        member = members[i // 2]
        if i % 2:
            deduct = {"member_id": member, "points": 60, "reason": "race"}
            return cluster.post(i, "/v1/points/deduct", deduct)
        body = {"reason": "returned"}
        return cluster.post(i, f"/v1/transactions/{awards[member]}/reverse", body)

    responses = all_at_once(2 * len(members), send)
    for index, member in enumerate(members):
        reversal, deduct = responses[2 * index], responses[2 * index + 1]
        codes = sorted([reversal.status_code, deduct.status_code])
        assert codes == [201, 422], (reversal.text, deduct.text)
        refused = reversal if reversal.status_code == 422 else deduct
        assert refused.json()["error"]["code"] == "insufficient_points"
        state = cluster.get(f"/v1/members/{member}/balance").json()["data"]
        assert state["balance"] == (0 if reversal.status_code == 201 else 40)
        rows = cluster.get(f"/v1/members/{member}/transactions").json()["data"]
        assert all(row["balance_after"] >= 0 for row in rows)
    assert ledger_is_consistent(cluster.database_url)
