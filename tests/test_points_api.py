"""The Points API of the seed page, shape for shape, on every backend."""

from __future__ import annotations

import pytest

from tally.commands import AwardCommand
from tally.ports import Tx
from tally.rules import points as point_rules
from tally.service import accounts
from tests.ledger_support import program_id
from tests.support import Api

SEED_AWARD = {
    "member_id": "mem_abc123",
    "points": 500,
    "reason": "Q2 Sales Target Achievement",
    "reference": "INV-2024-1234",
    "metadata": {"campaign": "q2-sales-push", "product_category": "Electronics"},
}


def test_seed_award_request_answers_with_the_seed_shape(api: Api) -> None:
    api.member("mem_abc123")
    response = api.post("/v1/points/award", SEED_AWARD)
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert data["transaction_id"].startswith("txn_")
    assert {k: data[k] for k in ("member_id", "points", "type", "reason", "new_balance")} == {
        "member_id": "mem_abc123",
        "points": 500,
        "type": "award",
        "reason": "Q2 Sales Target Achievement",
        "new_balance": 500,
    }
    assert data["reference"] == "INV-2024-1234"
    assert data["metadata"] == SEED_AWARD["metadata"]
    assert data["created_at"] == "2026-01-01T12:00:00Z"
    assert data["status"] == "posted"


def test_balance_has_the_seed_fields_and_the_lifetime_counters(api: Api) -> None:
    api.member("mem_abc123")
    api.award("mem_abc123", 700)
    assert api.deduct("mem_abc123", 200).status_code == 201
    assert api.balance("mem_abc123") == {
        "member_id": "mem_abc123",
        "balance": 500,
        "lifetime_earned": 700,
        "lifetime_redeemed": 0,
        "pending": 0,
        "lifetime_deducted": 200,
        "lifetime_expired": 0,
        "lifetime_transferred_in": 0,
        "lifetime_transferred_out": 0,
        "next_expiration": None,
    }


def test_deduct_returns_a_negative_transaction_and_the_new_balance(api: Api) -> None:
    api.member("m1")
    api.award("m1", 300)
    response = api.deduct("m1", 120, reference="ADJ-7")
    assert response.status_code == 201
    data = response.json()["data"]
    assert (data["type"], data["points"], data["new_balance"], data["reference"]) == (
        "deduct",
        -120,
        180,
        "ADJ-7",
    )


def test_deduct_more_than_the_balance_is_refused_and_changes_nothing(api: Api) -> None:
    api.member("m1")
    api.award("m1", 100)
    response = api.deduct("m1", 101)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "insufficient_points"
    assert error["details"][0]["available"] == 100
    assert api.balance("m1")["balance"] == 100
    assert len(api.history("m1")) == 1


def test_deduct_can_take_the_balance_to_exactly_zero(api: Api) -> None:
    api.member("m1")
    api.award("m1", 100)
    assert api.deduct("m1", 100).json()["data"]["new_balance"] == 0
    assert api.deduct("m1", 1).status_code == 422


def test_the_same_requests_over_and_over_all_answer(api: Api) -> None:
    """Every statement here runs far more often than psycopg's threshold for preparing it (5
    uses on a connection). Behind PgBouncer in transaction mode (`pytest --pgbouncer`) a
    connection's next transaction may run in another server session, where a statement
    prepared in the last one is unknown or its name taken: these answered 500 there."""
    api.member("m1")
    for round_ in range(1, 21):
        assert api.award("m1", 10)["new_balance"] == 5 * round_ + 5
        assert api.deduct("m1", 5).json()["data"]["new_balance"] == 5 * round_
        assert api.balance("m1")["balance"] == 5 * round_
        assert len(api.history("m1")) == 2 * round_


def test_bulk_award_answers_per_item_in_order(api: Api) -> None:
    api.member("mem_abc123")
    api.member("mem_xyz789")
    response = api.post(
        "/v1/points/award/bulk",
        {
            "awards": [
                {"member_id": "mem_abc123", "points": 500, "reason": "Monthly bonus"},
                {"member_id": "mem_xyz789", "points": 750, "reason": "Monthly bonus"},
            ]
        },
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["processed"], data["failed"], data["errors"]) == (2, 0, [])
    assert [(t["index"], t["member_id"], t["new_balance"]) for t in data["transactions"]] == [
        (0, "mem_abc123", 500),
        (1, "mem_xyz789", 750),
    ]
    assert all(t["transaction_id"].startswith("txn_") for t in data["transactions"])


def test_bulk_award_lets_one_bad_item_fail_alone(api: Api) -> None:
    api.member("a")
    response = api.post(
        "/v1/points/award/bulk",
        {
            "awards": [
                {"member_id": "a", "points": 10, "reason": "ok"},
                {"member_id": "ghost", "points": 10, "reason": "no such member"},
                {"member_id": "a", "points": 1.5, "reason": "float"},
                {"member_id": "a", "points": 5, "reason": "ok again"},
            ]
        },
    )
    data = response.json()["data"]
    assert (data["processed"], data["failed"]) == (2, 2)
    assert [t["new_balance"] for t in data["transactions"]] == [10, 15]
    assert [(e["index"], e["member_id"], e["error"]["code"]) for e in data["errors"]] == [
        (1, "ghost", "member_not_found"),
        (2, "a", "validation_error"),
    ]
    assert api.balance("a")["balance"] == 15


def test_atomic_bulk_award_applies_nothing_when_one_item_fails(api: Api) -> None:
    api.member("a")
    response = api.post(
        "/v1/points/award/bulk",
        {
            "atomic": True,
            "awards": [
                {"member_id": "a", "points": 10, "reason": "ok"},
                {"member_id": "ghost", "points": 10, "reason": "no such member"},
            ],
        },
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == "awards[1].member_id" or error["details"][0][
        "field"
    ].startswith("awards[1]")
    assert error["details"][0]["code"] == "member_not_found"
    assert api.balance("a")["balance"] == 0
    assert api.history("a") == []


@pytest.mark.parametrize("awards", [[], None])
def test_bulk_award_with_no_items_is_refused_whole(api: Api, awards: object) -> None:
    body = {} if awards is None else {"awards": awards}
    response = api.post("/v1/points/award/bulk", body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_bulk_award_of_ten_thousand_items_works_and_one_more_is_refused(api: Api) -> None:
    for member in ("a", "b"):
        api.member(member)
    items = [{"member_id": "ab"[i % 2], "points": 1, "reason": "bulk"} for i in range(10_000)]
    response = api.post("/v1/points/award/bulk", {"awards": items})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["processed"] == 10_000
    assert api.balance("a")["balance"] == 5_000
    too_many = api.post("/v1/points/award/bulk", {"awards": [*items, items[0]]})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["details"][0]["field"] == "awards"
    assert api.balance("a")["balance"] == 5_000


LARGEST = 2**63 - 1  # every counter is a 64-bit integer


def earned_nearly_all_there_is(api: Api, member_id: str, points: int) -> None:
    """`points` more earned by the member than any one request may award: one award made by
    the service's own rules, straight on the store."""
    acme = program_id(api.store)
    assert api.clock is not None
    now = api.clock()

    def work(tx: Tx) -> None:
        member = accounts.locked_member(tx, acme, member_id, now).member
        command = AwardCommand(member_id, points, "years of loyalty")
        posting = point_rules.plan_award(
            member, command, expire_after_days=None, now=now, created_by="key_test"
        )
        accounts.write_awards(tx, [posting], now)

    api.store.transact(work)


def test_an_award_that_would_take_lifetime_earned_past_64_bits_is_refused(api: Api) -> None:
    """The balance stays in range once points are spent, but lifetime_earned only grows."""
    api.member("m")
    earned_nearly_all_there_is(api, "m", LARGEST - 10)
    assert api.deduct("m", 20).status_code == 201
    assert api.award("m", 10)["new_balance"] == LARGEST - 20  # lifetime_earned is now LARGEST
    refused = api.post("/v1/points/award", {"member_id": "m", "points": 1, "reason": "one more"})
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["details"][0]["field"]) == ("validation_error", "points")
    later = {
        "member_id": "m",
        "points": 1,
        "reason": "later",
        "available_at": "2030-01-01T00:00:00Z",
    }
    assert api.post("/v1/points/award", later).status_code == 422
    bulk = api.post(
        "/v1/points/award/bulk",
        {"awards": [{"member_id": "m", "points": 1, "reason": "bulk"}]},
    )
    assert bulk.status_code == 200, bulk.text
    assert [e["error"]["code"] for e in bulk.json()["data"]["errors"]] == ["validation_error"]
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_earned"], balance["pending"]) == (
        LARGEST - 20,
        LARGEST,
        0,
    )


def test_history_is_newest_first_with_a_balance_after_chain_that_adds_up(api: Api) -> None:
    api.member("m")
    for points in (100, 250, 40):
        api.award("m", points)
        api.clock.advance(minutes=1)  # type: ignore[union-attr]
    api.deduct("m", 90)
    rows = api.history("m")
    assert [r["points"] for r in rows] == [-90, 40, 250, 100]
    for newer, older in zip(rows, rows[1:], strict=False):
        assert newer["balance_after"] == older["balance_after"] + newer["points"]
    assert rows[0]["balance_after"] == api.balance("m")["balance"] == 300
    assert set(rows[0]) >= {
        "transaction_id",
        "type",
        "points",
        "reason",
        "balance_after",
        "created_at",
    }


def test_history_pages_carry_meta(api: Api) -> None:
    api.member("m")
    for i in range(1, 8):
        api.award("m", i)
    response = api.get("/v1/members/m/transactions", page=2, per_page=3)
    body = response.json()
    assert body["meta"] == {"page": 2, "per_page": 3, "total": 7, "total_pages": 3}
    assert [r["points"] for r in body["data"]] == [4, 3, 2]
    last = api.get("/v1/members/m/transactions", page=3, per_page=3).json()
    assert [r["points"] for r in last["data"]] == [1]
    beyond = api.get("/v1/members/m/transactions", page=9, per_page=3).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 7


def test_every_page_of_a_history_lists_each_row_once(api: Api) -> None:
    api.member("m")
    for i in range(1, 24):
        api.award("m", i)
    seen = []
    for page in range(1, 6):
        body = api.get("/v1/members/m/transactions", page=page, per_page=5).json()
        seen += [r["points"] for r in body["data"]]
    assert seen == list(range(23, 0, -1))


def test_history_filters_by_type_and_time(api: Api) -> None:
    api.member("m")
    api.award("m", 100)  # 2026-01-01T12:00
    api.clock.advance(days=1)  # type: ignore[union-attr]
    api.deduct("m", 30)  # 2026-01-02T12:00
    api.clock.advance(days=1)  # type: ignore[union-attr]
    api.award("m", 5)  # 2026-01-03T12:00
    assert [r["points"] for r in api.history("m", type="award")] == [5, 100]
    assert [r["points"] for r in api.history("m", type="deduct")] == [-30]
    assert [r["points"] for r in api.history("m", **{"from": "2026-01-02"})] == [5, -30]
    assert [r["points"] for r in api.history("m", to="2026-01-02")] == [-30, 100]
    window = {"from": "2026-01-02T00:00:00Z", "to": "2026-01-02T12:00:00Z"}
    assert [r["points"] for r in api.history("m", **window)] == [-30]
    offset = {"to": "2026-01-01T13:00:00+01:00"}
    assert [r["points"] for r in api.history("m", **offset)] == [100]
    filtered = api.get("/v1/members/m/transactions", type="award").json()
    assert filtered["meta"]["total"] == 2


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"page": "x"},
        {"per_page": "101"},
        {"per_page": "0"},
        {"type": "bonus"},
        {"from": "yesterday"},
        {"from": "2026-01-02T00:00:00"},
        {"to": "2026-13-01"},
        {"from": "2026-01-03", "to": "2026-01-02"},
        {"page": "-1"},
        {"per_page": "1.5"},
    ],
)
def test_history_refuses_bad_parameters(api: Api, params: dict[str, str]) -> None:
    api.member("m")
    response = api.get("/v1/members/m/transactions", **params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] in params


def test_points_routes_for_an_unknown_member_are_404(api: Api) -> None:
    for response in (
        api.get("/v1/members/ghost/balance"),
        api.get("/v1/members/ghost/transactions"),
        api.post("/v1/points/award", {"member_id": "ghost", "points": 1, "reason": "x"}),
        api.post("/v1/points/deduct", {"member_id": "ghost", "points": 1, "reason": "x"}),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "member_not_found"


def test_a_transaction_can_be_fetched_with_its_member(api: Api) -> None:
    api.member("m")
    created = api.award("m", 42, reference="R-1")
    response = api.get(f"/v1/transactions/{created['transaction_id']}")
    assert response.status_code == 200
    data = response.json()["data"]
    assert (data["member_id"], data["points"], data["balance_after"], data["reference"]) == (
        "m",
        42,
        42,
        "R-1",
    )
    missing = api.get("/v1/transactions/txn_nope")
    assert (missing.status_code, missing.json()["error"]["code"]) == (
        404,
        "transaction_not_found",
    )


def test_a_spend_across_many_lots_takes_the_soonest_expiring_first(api: Api) -> None:
    api.member("m")
    items = [{"member_id": "m", "points": 1, "reason": "never"} for _ in range(40)]
    items += [
        {"member_id": "m", "points": 1, "reason": "soon", "expires_at": "2026-02-01T00:00:00Z"}
        for _ in range(40)
    ]
    assert api.post("/v1/points/award/bulk", {"awards": items}).json()["data"]["processed"] == 80
    assert api.balance("m")["next_expiration"] == {
        "points": 40,
        "expires_at": "2026-02-01T00:00:00Z",
    }
    assert api.deduct("m", 45).status_code == 201
    balance = api.balance("m")
    assert (balance["balance"], balance["next_expiration"]) == (35, None)
    api.clock.advance(days=60)  # type: ignore[union-attr]
    assert api.balance("m")["lifetime_expired"] == 0
