"""Events and the feed (api.md, section 8): one event per effect, in the change's transaction.

Every test runs on each backend. What an event says is compared with what the API answers for
the same object at that moment; the feed's ordering under concurrent writers is in
`test_event_feed_concurrency.py`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tally.domain import Event
from tally.ports import Tx
from tally.service.outbox import EVENT_TYPES
from tests.ledger_support import stamp
from tests.support import Api, FakeClock, error_code


def poll(api: Api, *, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Every event the feed lists, paging with `after` as a consumer does."""
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        response = api.get("/v1/events", key=key, **query)
        assert response.status_code == 200, response.text
        page = response.json()
        seen += page["data"]
        after = page["meta"]["next_after"]
        if not page["meta"]["has_more"]:
            return seen


def latest(api: Api, count: int) -> list[dict[str, Any]]:
    return poll(api, limit=1000)[-count:]


def data_of(api: Api, path: str) -> dict[str, Any]:
    response = api.get(path)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def test_every_change_writes_its_events_and_each_carries_the_object_as_the_api_shows_it(
    api: Api, clock: FakeClock
) -> None:
    api.member("alice", email="alice@example.com", metadata={"tier": "gold"})
    [created] = latest(api, 1)
    assert created["type"] == "member.created"
    assert created["data"] == data_of(api, "/v1/members/alice")
    assert created["event_id"].startswith("evt_")
    assert created["timestamp"] == "2026-01-01T12:00:00Z"

    award = api.award("alice", 500, metadata={"order": 7}, expires_at=stamp("2026-03-01"))
    [awarded] = latest(api, 1)
    assert awarded["type"] == "transaction.created"
    assert awarded["data"] == data_of(api, f"/v1/transactions/{award['transaction_id']}")
    assert awarded["data"]["metadata"] == {"order": 7}

    deducted = api.deduct("alice", 100)
    assert deducted.status_code == 201
    [spent] = latest(api, 1)
    assert spent["data"]["type"] == "deduct"
    assert spent["data"] == data_of(
        api, f"/v1/transactions/{deducted.json()['data']['transaction_id']}"
    )

    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 50, "stock": 3}).json()["data"]
    path = f"/v1/rewards/{reward['reward_id']}"
    assert latest(api, 1)[0]["data"] == data_of(api, path)
    assert api.patch(path, {"name": "Big mug"}).status_code == 200
    [updated] = latest(api, 1)
    assert (updated["type"], updated["data"]) == ("reward.updated", data_of(api, path))

    body = {"member_id": "alice", "reward_id": reward["reward_id"]}
    redemption = api.post("/v1/redemptions", body).json()["data"]
    redeemed, made = latest(api, 2)
    assert (redeemed["type"], redeemed["data"]["type"]) == ("transaction.created", "redeem")
    assert made["type"] == "redemption.created"
    red_path = f"/v1/redemptions/{redemption['redemption_id']}"
    assert made["data"] == data_of(api, red_path)
    assert api.post(red_path + "/cancel").status_code == 200
    refunded, cancelled = latest(api, 2)
    assert (refunded["type"], refunded["data"]["type"]) == ("transaction.created", "refund")
    assert (cancelled["type"], cancelled["data"]) == (
        "redemption.cancelled",
        data_of(api, red_path),
    )


def test_a_pending_award_reports_its_posting_and_its_cancellation(
    api: Api, clock: FakeClock
) -> None:
    api.member("bob")
    later = stamp("2026-01-02T12:00")
    posts = api.award("bob", 70, available_at=later)
    dropped = api.award("bob", 30, available_at=later)
    assert latest(api, 1)[0]["data"]["status"] == "pending"

    assert api.post(f"/v1/transactions/{dropped['transaction_id']}/cancel").status_code == 200
    [cancelled] = latest(api, 1)
    assert cancelled["type"] == "transaction.cancelled"
    assert cancelled["data"] == data_of(api, f"/v1/transactions/{dropped['transaction_id']}")
    assert cancelled["data"]["status"] == "cancelled"

    clock.advance(days=2)
    assert api.balance("bob")["balance"] == 70  # the read catches the member up
    [posted] = latest(api, 1)
    assert posted["type"] == "transaction.posted"
    assert posted["data"] == data_of(api, f"/v1/transactions/{posts['transaction_id']}")
    assert (posted["data"]["status"], posted["data"]["balance_after"]) == ("posted", 70)
    assert posted["timestamp"] == "2026-01-03T12:00:00Z"


def test_an_expiry_is_a_transaction_created_event(api: Api, clock: FakeClock) -> None:
    api.member("carol")
    api.award("carol", 40, expires_at=stamp("2026-01-05"))
    clock.advance(days=10)
    assert api.balance("carol")["balance"] == 0
    [expired] = latest(api, 1)
    assert (expired["type"], expired["data"]["type"], expired["data"]["points"]) == (
        "transaction.created",
        "expire",
        -40,
    )


def test_a_bulk_award_writes_one_event_per_award_and_a_refused_change_writes_none(
    api: Api,
) -> None:
    for name in ("m1", "m2", "m3"):
        api.member(name)
    before = len(poll(api))
    items = [{"member_id": m, "points": 5, "reason": "bulk"} for m in ("m1", "m2", "ghost", "m3")]
    response = api.post("/v1/points/award/bulk", {"awards": items})
    assert response.json()["data"]["processed"] == 3
    made = poll(api)[before:]
    assert [e["data"]["member_id"] for e in made] == ["m1", "m2", "m3"]

    # Refused, every one: nothing changed, so nothing is reported.
    refused = [
        api.post("/v1/points/award/bulk", {"awards": items, "atomic": True}),
        api.deduct("m1", 1_000),
        api.post("/v1/members", {"member_id": "m1"}),
        api.post("/v1/points/award", {"member_id": "ghost", "points": 1, "reason": "x"}),
    ]
    assert [r.status_code for r in refused] == [422, 422, 409, 404]
    # A replay under the same Idempotency-Key reports nothing a second time.
    body = {"member_id": "m1", "points": 3, "reason": "once"}
    first, again = (api.post("/v1/points/award", body, idem="once") for _ in range(2))
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [e["data"]["transaction_id"] for e in poll(api)[before + 3 :]] == [
        first.json()["data"]["transaction_id"]
    ]


def test_the_feed_pages_with_after_and_filters_by_type(api: Api) -> None:
    api.member("dave")
    for points in range(1, 6):
        api.award("dave", points)
    everything = poll(api)
    assert [e["type"] for e in everything] == ["member.created"] + ["transaction.created"] * 5
    assert len({e["event_id"] for e in everything}) == 6

    first = api.get("/v1/events", limit=2).json()
    assert first["meta"] == {"limit": 2, "has_more": True, "next_after": everything[1]["event_id"]}
    rest = api.get("/v1/events", after=everything[1]["event_id"], limit=100).json()
    assert rest["data"] == everything[2:]
    assert rest["meta"] == {
        "limit": 100,
        "has_more": False,
        "next_after": everything[-1]["event_id"],
    }
    # Polling from the newest event finds nothing new and keeps the place.
    idle = api.get("/v1/events", after=everything[-1]["event_id"]).json()
    assert idle["data"] == []
    assert idle["meta"]["next_after"] == everything[-1]["event_id"]

    assert poll(api, type="member.created") == everything[:1]
    assert poll(api, type="transaction.created,member.created") == everything
    assert poll(api, type="transaction.created", limit=2) == everything[1:]
    assert poll(api, type="reward.created") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"type": "transaction.create"}, "type"),
        ({"type": "member.created,"}, "type"),
        ({"after": "evt_nothing_like_this"}, "after"),
        ({"after": "x" * 65}, "after"),
    ],
)
def test_a_bad_feed_query_is_refused_naming_the_parameter(
    api: Api, params: dict[str, str], field: str
) -> None:
    response = api.get("/v1/events", **params)
    assert response.status_code == 422, response.text
    assert error_code(response) == "validation_error"
    assert response.json()["error"]["details"][0]["field"] == field


def test_a_program_never_sees_another_programs_events(api: Api) -> None:
    api.member("erin")
    theirs = api.key_for("globex")
    assert poll(api, key=theirs) == []
    mine = poll(api)
    # Another program's event id is answered exactly like one that exists nowhere.
    ours, nowhere = mine[0]["event_id"], "evt_01JZZZZZZZZZZZZZZZZZZZZZZZ"
    answers = [api.get("/v1/events", key=theirs, after=after) for after in (ours, nowhere)]
    assert [a.status_code for a in answers] == [422, 422]
    first, second = (a.json()["error"] for a in answers)
    assert first == {
        "code": second["code"],
        "message": second["message"].replace(nowhere, ours),
        "details": [{"field": "after", "message": second["message"].replace(nowhere, ours)}],
    }


def test_every_documented_event_type_can_be_filtered_on(api: Api) -> None:
    for kind in EVENT_TYPES:
        assert api.get("/v1/events", type=kind).status_code == 200


def test_events_are_in_the_feed_only_once_their_change_has_committed(
    api: Api, clock: FakeClock
) -> None:
    """A unit of work that writes an event and then fails leaves no event behind."""
    api.member("frank")
    before = poll(api)

    def failing(tx: Tx) -> None:
        tx.events.append([Event("evt_rolled_back", 1, "member.created", clock(), "{}")])
        raise RuntimeError("the change fails after writing its event")

    with pytest.raises(RuntimeError):
        api.store.transact(failing)
    assert poll(api) == before
    api.award("frank", 1)
    assert len(poll(api)) == len(before) + 1
