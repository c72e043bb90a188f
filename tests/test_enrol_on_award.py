"""Enrol on award (api.md section 9): `PATCH /v1/program {"enrol_on_award": true}` lets awards,
bulk items and transfers to an unknown member id enrol it, in the same database transaction.

Every test runs on each backend; the `api` fixture checks `tally verify` afterwards. The race
runs against real servers (one process, two workers, two servers).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tally.domain import Scope
from tally.maintenance import create_key, verify
from tally.storage import open_store
from tests.ledger_support import error_code, full_history, stamp
from tests.support import Api, everything, start_server
from tests.test_concurrency import TOPOLOGIES, Cluster, all_at_once
from tests.test_events import poll


def enrol_on_award(api: Api, enabled: bool = True) -> dict[str, Any]:
    response = api.patch("/v1/program", {"enrol_on_award": enabled})
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def award(api: Api, member_id: str, points: int, **fields: Any) -> httpx.Response:
    body = {"member_id": member_id, "points": points, "reason": "welcome", **fields}
    idem = body.pop("idem", None)
    return api.post("/v1/points/award", body, idem=idem)


def enrolled(api: Api) -> list[str]:
    """The ids of the program's members, in enrolment order."""
    return [m["member_id"] for m in api.get("/v1/members", per_page=100).json()["data"]]


def created_members(api: Api) -> list[str]:
    return [event["data"]["member_id"] for event in poll(api, type="member.created")]


def test_the_setting_is_off_until_turned_on_and_shown_by_the_program(api: Api) -> None:
    assert api.get("/v1/program").json()["data"]["enrol_on_award"] is False
    assert enrol_on_award(api)["enrol_on_award"] is True
    assert api.get("/v1/program").json()["data"]["enrol_on_award"] is True
    # Setting the expiry policy leaves it alone, and it leaves the policy alone.
    changed = api.patch("/v1/program", {"points_expire_after_days": 30}).json()["data"]
    assert (changed["enrol_on_award"], changed["points_expire_after_days"]) == (True, 30)
    assert enrol_on_award(api, False) == {**changed, "enrol_on_award": False}


@pytest.mark.parametrize("value", [None, 1, "true", [], {}])
def test_a_setting_that_is_not_a_boolean_is_refused_naming_it(api: Api, value: Any) -> None:
    response = api.patch("/v1/program", {"enrol_on_award": value})
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == "enrol_on_award"
    assert api.get("/v1/program").json()["data"]["enrol_on_award"] is False


def test_with_the_setting_off_an_unknown_member_is_not_found_and_nothing_changes(
    api: Api,
) -> None:
    api.member("a")
    api.award("a", 50)
    before = everything(api)
    assert error_code(award(api, "newcomer", 10)) == (404, "member_not_found")
    transfer = {"from_member_id": "a", "to_member_id": "newcomer", "points": 5, "reason": "r"}
    assert error_code(api.post("/v1/points/transfer", transfer)) == (404, "member_not_found")
    bulk = api.post(
        "/v1/points/award/bulk", {"awards": [{"member_id": "n", "points": 1, "reason": "r"}]}
    )
    assert bulk.json()["data"]["errors"][0]["error"]["code"] == "member_not_found"
    assert everything(api) == before
    assert created_members(api) == ["a"]


def test_an_award_enrols_an_unknown_member_with_its_event_first(api: Api) -> None:
    enrol_on_award(api)
    response = award(api, "newcomer", 500, reference="INV-1")
    assert response.status_code == 201, response.text
    assert response.json()["data"]["new_balance"] == 500
    member = api.get("/v1/members/newcomer").json()["data"]
    assert (member["email"], member["name"], member["metadata"]) == (None, None, None)
    assert api.balance("newcomer")["balance"] == 500
    events = poll(api)
    assert [(e["type"], e["data"]["member_id"]) for e in events] == [
        ("member.created", "newcomer"),
        ("transaction.created", "newcomer"),
    ]
    assert events[0]["data"] == member
    # A known member is awarded as ever, and no second enrolment happens.
    assert award(api, "newcomer", 5).status_code == 201
    assert created_members(api) == ["newcomer"]


def test_a_refused_award_enrols_no_one(api: Api) -> None:
    enrol_on_award(api)
    response = award(api, "newcomer", 5, expires_at=stamp("2025-01-01"))
    assert error_code(response) == (422, "validation_error")
    assert error_code(api.get("/v1/members/newcomer")) == (404, "member_not_found")
    assert created_members(api) == []


def test_a_bulk_award_enrols_the_unknown_members_among_known_ones(api: Api) -> None:
    api.member("known")
    enrol_on_award(api)
    items: list[dict[str, Any]] = [
        {"member_id": "known", "points": 10, "reason": "bulk"},
        {"member_id": "new-1", "points": 20, "reason": "bulk"},
        {"member_id": "new-2", "points": 5, "reason": "bulk", "expires_at": stamp("2025-01-01")},
        {"member_id": "new-1", "points": 30, "reason": "bulk"},
        {"member_id": "new-3", "points": 0, "reason": "bulk"},  # refused as it is read
        {"member_id": "new-4", "points": 1, "reason": "bulk"},
    ]
    response = api.post("/v1/points/award/bulk", {"awards": items})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["processed"], data["failed"]) == (4, 2)
    assert [(t["index"], t["member_id"], t["new_balance"]) for t in data["transactions"]] == [
        (0, "known", 10),
        (1, "new-1", 20),
        (3, "new-1", 50),
        (5, "new-4", 1),
    ]
    assert [e["index"] for e in data["errors"]] == [2, 4]
    # Only members with an item that applied are enrolled: a failed item leaves no one behind.
    assert enrolled(api) == ["known", "new-1", "new-4"]
    assert created_members(api) == ["known", "new-1", "new-4"]
    assert [row["points"] for row in full_history(api, "new-1")] == [30, 20]


def test_an_atomic_bulk_that_is_refused_enrols_no_one(api: Api) -> None:
    enrol_on_award(api)
    items = [
        {"member_id": "new-1", "points": 20, "reason": "bulk"},
        {"member_id": "new-2", "points": 5, "reason": "bulk", "expires_at": stamp("2025-01-01")},
    ]
    response = api.post("/v1/points/award/bulk", {"awards": items, "atomic": True})
    assert error_code(response) == (422, "validation_error")
    assert enrolled(api) == [] and created_members(api) == []
    response = api.post("/v1/points/award/bulk", {"awards": items[:1], "atomic": True})
    assert response.status_code == 200, response.text
    assert enrolled(api) == ["new-1"]


def test_a_transfer_enrols_an_unknown_receiver_but_never_a_sender(api: Api) -> None:
    api.member("a")
    api.award("a", 100)
    enrol_on_award(api)
    moved = api.post(
        "/v1/points/transfer",
        {"from_member_id": "a", "to_member_id": "sister", "points": 40, "reason": "gift"},
    )
    assert moved.status_code == 201, moved.text
    assert api.balance("sister")["lifetime_transferred_in"] == 40
    unknown_sender = api.post(
        "/v1/points/transfer",
        {"from_member_id": "ghost", "to_member_id": "brother", "points": 1, "reason": "gift"},
    )
    assert error_code(unknown_sender) == (404, "member_not_found")
    assert "ghost" in unknown_sender.json()["error"]["message"]
    too_much = api.post(
        "/v1/points/transfer",
        {"from_member_id": "a", "to_member_id": "brother", "points": 61, "reason": "gift"},
    )
    assert error_code(too_much) == (422, "insufficient_points")
    assert enrolled(api) == ["a", "sister"]
    assert created_members(api) == ["a", "sister"]


def test_a_replayed_award_enrols_once(api: Api) -> None:
    enrol_on_award(api)
    first = award(api, "newcomer", 25, idem="order-1")
    again = award(api, "newcomer", 25, idem="order-1")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert api.balance("newcomer")["balance"] == 25
    assert created_members(api) == ["newcomer"]
    assert len(poll(api, type="transaction.created")) == 1


def test_turning_the_setting_off_again_refuses_unknown_members_again(api: Api) -> None:
    enrol_on_award(api)
    assert award(api, "first", 1).status_code == 201
    enrol_on_award(api, False)
    assert error_code(award(api, "second", 1)) == (404, "member_not_found")
    assert enrolled(api) == ["first"]


@pytest.fixture(params=list(TOPOLOGIES))
def servers(request: pytest.FixtureRequest, database_url: str) -> Iterator[Cluster]:
    """Real servers on one database (as `test_concurrency.py`'s), and a write key."""
    workers, count = TOPOLOGIES[request.param]
    store = open_store(database_url)
    store.migrate()
    key = create_key(store, program="race", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    store.close()
    started = [start_server(database_url, workers=workers) for _ in range(count)]
    try:
        yield Cluster(database_url, started, key)
    finally:
        for server in started:
            server.stop()


def test_awards_racing_to_enrol_one_new_member_make_it_once_and_all_count(
    servers: Cluster,
) -> None:
    """Eight awards to one unknown id, and four to another, released together at real
    servers: each id becomes exactly one member, with one member.created, and every award
    counts."""
    cluster = servers
    auth = {"Authorization": f"Bearer {cluster.key}"}
    patched = httpx.patch(
        cluster.urls[0] + "/v1/program", json={"enrol_on_award": True}, headers=auth, timeout=60
    )
    assert patched.status_code == 200, patched.text

    def send(index: int) -> httpx.Response:
        member_id = "twin" if index % 3 else "solo"
        body = {"member_id": member_id, "points": 10 + index, "reason": "race"}
        return cluster.post(index, "/v1/points/award", body)

    responses = all_at_once(12, send)
    assert [r.status_code for r in responses] == [201] * 12, [r.text for r in responses]
    members = cluster.get("/v1/members", per_page=100).json()["data"]
    assert sorted(m["member_id"] for m in members) == ["solo", "twin"]
    for member_id, indexes in (("twin", [i for i in range(12) if i % 3]), ("solo", [0, 3, 6, 9])):
        balance = cluster.get(f"/v1/members/{member_id}/balance").json()["data"]
        assert balance["balance"] == sum(10 + i for i in indexes), member_id
    events = cluster.get("/v1/events", limit=1000).json()["data"]
    created = sorted(e["data"]["member_id"] for e in events if e["type"] == "member.created")
    assert created == ["solo", "twin"]
    assert sum(e["type"] == "transaction.created" for e in events) == 12
    store = open_store(cluster.database_url)
    try:
        assert verify(store) == []
    finally:
        store.close()
