"""Reversals of awards and deducts (api.md section 9): `POST /v1/transactions/{id}/reverse`.

Every test runs on each backend with a FakeClock that starts at 2026-01-01T12:00Z; after each one
the `api` fixture checks that `tally verify` finds the ledger consistent (counters, the
balance_after chains, lots, draws, debts and every reversal's link to what it reverses).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tally.domain import Scope
from tests.ledger_support import (
    assert_ledger_order,
    counters_add_up,
    error_code,
    full_history,
    lot_remainders,
    move_to,
    stamp,
    transaction,
)
from tests.support import Api, FakeClock, everything
from tests.test_events import poll


def send(api: Api, transaction_id: str, **fields: Any) -> httpx.Response:
    idem = fields.pop("idem", None)
    body = {"reason": "order returned", **fields}
    return api.post(f"/v1/transactions/{transaction_id}/reverse", body, idem=idem)


def reversed_(api: Api, transaction_id: str, **fields: Any) -> dict[str, Any]:
    response = send(api, transaction_id, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def deducted(api: Api, member_id: str, points: int) -> dict[str, Any]:
    response = api.deduct(member_id, points)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def figures(api: Api, member_id: str) -> tuple[int, int, int]:
    """(balance, lifetime_earned, lifetime_deducted), after checking the identity holds."""
    b = api.balance(member_id)
    assert counters_add_up(b), b
    return b["balance"], b["lifetime_earned"], b["lifetime_deducted"]


def check_history(api: Api, member_id: str) -> None:
    assert_ledger_order(full_history(api, member_id), api.balance(member_id)["balance"])


@pytest.fixture
def award(api: Api) -> str:
    """Member `m` with an award of 100 (never expiring): its transaction id."""
    api.member("m")
    return str(api.award("m", 100)["transaction_id"])


def test_reversing_a_whole_award_takes_its_points_back_as_a_reversal_row(
    api: Api, award: str
) -> None:
    made = reversed_(api, award, reference="RMA-7", metadata={"order": 7})
    assert made["transaction_id"].startswith("txn_") and made["transaction_id"] != award
    assert (made["member_id"], made["type"], made["status"], made["points"]) == (
        "m",
        "reversal",
        "posted",
        -100,
    )
    assert (made["reverses"], made["points_reversed"], made["balance_after"]) == (award, 0, 0)
    assert (made["reason"], made["reference"], made["metadata"]) == (
        "order returned",
        "RMA-7",
        {"order": 7},
    )
    assert transaction(api, made["transaction_id"]) == made
    assert api.history("m", type="reversal") == [made]
    original = transaction(api, award)
    assert (original["points"], original["points_reversed"], original["reverses"]) == (
        100,
        100,
        None,
    )
    assert api.history("m")[1] == original  # the history shows the same
    assert figures(api, "m") == (0, 0, 0)
    assert lot_remainders(api.store, "m") == []
    check_history(api, "m")


def test_partial_reversals_add_up_and_the_default_is_what_is_left(api: Api, award: str) -> None:
    api.award("m", 50)
    first = reversed_(api, award, points=30)
    assert (first["points"], first["balance_after"]) == (-30, 120)
    assert transaction(api, award)["points_reversed"] == 30
    assert figures(api, "m") == (120, 120, 0)
    rest = reversed_(api, award)  # the 70 not yet reversed
    assert (rest["points"], rest["balance_after"]) == (-70, 50)
    assert transaction(api, award)["points_reversed"] == 100
    assert figures(api, "m") == (50, 50, 0)
    assert lot_remainders(api.store, "m") == [50]  # the other award's lot is untouched
    again = send(api, award, points=1)
    assert error_code(again) == (409, "not_reversible")
    check_history(api, "m")


def test_reversing_a_deduct_gives_the_points_back_as_a_lot_under_the_current_policy(
    api: Api, award: str, clock: FakeClock
) -> None:
    deduct = deducted(api, "m", 60)
    assert api.patch("/v1/program", {"points_expire_after_days": 30}).status_code == 200
    made = reversed_(api, deduct["transaction_id"], points=25)
    assert (made["type"], made["points"], made["balance_after"], made["reverses"]) == (
        "reversal",
        25,
        65,
        deduct["transaction_id"],
    )
    assert made["expires_at"] == stamp("2026-01-31T12:00")
    assert figures(api, "m") == (65, 100, 35)
    assert transaction(api, deduct["transaction_id"])["points_reversed"] == 25
    assert lot_remainders(api.store, "m") == [25, 40]  # the new lot expires first
    more = send(api, deduct["transaction_id"], points=36)
    assert error_code(more) == (422, "validation_error")
    assert more.json()["error"]["details"][0]["field"] == "points"
    move_to(clock, "2026-02-01")
    assert figures(api, "m") == (40, 100, 35)  # the given-back 25 expired under the policy
    assert api.balance("m")["lifetime_expired"] == 25
    check_history(api, "m")


def test_an_award_partly_spent_needs_allow_negative_to_take_more_than_is_left(
    api: Api, award: str
) -> None:
    api.award("m", 30)  # never expires, newer: deducts take the older award's lot first
    deducted(api, "m", 80)  # the award's lot keeps 20, the other 30
    refused = send(api, award, points=21)
    assert error_code(refused) == (422, "insufficient_points")
    detail = refused.json()["error"]["details"][0]
    assert (detail["field"], detail["available"], detail["requested"]) == ("points", 20, 21)
    assert "allow_negative" in refused.json()["error"]["message"]
    # With allow_negative: the award's own 20, then the other lot's 30, then a debt of 50.
    made = reversed_(api, award, allow_negative=True)
    assert (made["points"], made["balance_after"]) == (-100, -50)
    assert figures(api, "m") == (-50, 30, 80)
    assert lot_remainders(api.store, "m") == []
    check_history(api, "m")


def test_a_debt_refuses_every_spend_until_later_awards_have_paid_it_back(
    api: Api, award: str
) -> None:
    api.member("friend")
    deducted(api, "m", 100)
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 1}).json()["data"]
    reversed_(api, award, points=60, allow_negative=True)
    assert figures(api, "m") == (-60, 40, 100)

    def refusals() -> list[tuple[int, str]]:
        spends = [
            api.deduct("m", 1),
            api.post(
                "/v1/points/transfer",
                {"from_member_id": "m", "to_member_id": "friend", "points": 1, "reason": "x"},
            ),
            api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward["reward_id"]}),
        ]
        return [error_code(r) for r in spends]

    before = everything(api)
    assert refusals() == [(422, "insufficient_points")] * 3
    refused = api.deduct("m", 1).json()["error"]
    assert refused["details"][0]["debt"] == 60 and "owes 60" in refused["message"]
    assert everything(api) == before
    paid = api.award("m", 45)  # pays 45 of the debt, no lot is left to spend
    assert paid["new_balance"] == -15
    assert lot_remainders(api.store, "m") == []
    assert refusals() == [(422, "insufficient_points")] * 3
    api.award("m", 25)  # pays the last 15: 10 become a lot
    assert figures(api, "m") == (10, 110, 100)
    assert lot_remainders(api.store, "m") == [10]
    assert api.deduct("m", 10).status_code == 201
    check_history(api, "m")


def test_every_kind_of_credit_pays_a_debt_first(api: Api, award: str, clock: FakeClock) -> None:
    api.member("friend")
    api.award("friend", 100)
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10}).json()["data"]
    redeemed = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward["reward_id"]})
    deduct = deducted(api, "m", 90)
    api.award("m", 30, available_at=stamp("2026-01-02"))  # pending
    reversed_(api, award, allow_negative=True)
    assert figures(api, "m") == (-100, 0, 90)
    # A refund (a cancelled redemption), a transfer in, a deduct's reversal, a maturity.
    cancel = api.post(f"/v1/redemptions/{redemption_id(redeemed)}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert api.balance("m")["balance"] == -90
    moved = api.post(
        "/v1/points/transfer",
        {"from_member_id": "friend", "to_member_id": "m", "points": 20, "reason": "help"},
    )
    assert moved.status_code == 201 and moved.json()["data"]["to"]["balance_after"] == -70
    assert reversed_(api, deduct["transaction_id"], points=50)["balance_after"] == -20
    move_to(clock, "2026-01-02")
    assert figures(api, "m") == (10, 30, 40)
    assert lot_remainders(api.store, "m") == [10]  # what is left of the matured award
    check_history(api, "m")


def redemption_id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["redemption_id"])


def test_an_award_that_pays_a_debt_and_then_expires_expires_only_what_it_kept(
    api: Api, award: str, clock: FakeClock
) -> None:
    deducted(api, "m", 100)
    reversed_(api, award, points=40, allow_negative=True)
    api.award("m", 50, available_at=stamp("2026-01-02"), expires_at=stamp("2026-01-03"))
    move_to(clock, "2026-01-04")  # matures (40 pay the debt, 10 kept), then expires
    b = api.balance("m")
    assert (b["balance"], b["lifetime_expired"]) == (0, 10)
    assert [r["points"] for r in api.history("m", type="expire")] == [-10]
    check_history(api, "m")


def test_an_awards_own_lot_is_reversed_first_and_the_rest_stays_in_spend_order(
    api: Api, award: str
) -> None:
    api.award("m", 50, expires_at=stamp("2026-02-01"))
    reversed_(api, award, points=100)
    assert lot_remainders(api.store, "m") == [50]  # the soonest-expiring lot is not touched
    assert figures(api, "m") == (50, 50, 0)


def reversal_events(api: Api) -> list[tuple[str, dict[str, Any]]]:
    """Every event about a reversal row, from the whole feed. (Slicing the feed at a count
    taken earlier would not do: on PostgreSQL the feed may hold back older events for a moment
    while other transactions on the server are open, and list them only afterwards.)"""
    return [
        (e["type"], e["data"])
        for e in poll(api)
        if e["type"].startswith("transaction.") and e["data"]["type"] == "reversal"
    ]


def test_a_reversal_writes_one_transaction_created_event(api: Api, award: str) -> None:
    made = reversed_(api, award, points=10)
    assert reversal_events(api) == [("transaction.created", made)]


def test_a_retried_reversal_has_exactly_one_effect(api: Api, award: str) -> None:
    first = send(api, award, points=40, idem="r-1")
    again = send(api, award, points=40, idem="r-1")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert reversal_events(api) == [("transaction.created", first.json()["data"])]
    assert figures(api, "m") == (60, 60, 0)
    assert transaction(api, award)["points_reversed"] == 40
    other = send(api, award, points=41, idem="r-1")
    assert error_code(other) == (422, "idempotency_key_reused")


REFUSALS = [
    # (which transaction, body fields, status, code, field)
    ("award", {"points": 101}, 422, "validation_error", "points"),
    ("award", {"points": 0}, 422, "validation_error", "points"),
    ("award", {"points": -5}, 422, "validation_error", "points"),
    ("award", {"points": 1.5}, 422, "validation_error", "points"),
    ("award", {"points": "5"}, 422, "validation_error", "points"),
    ("award", {"points": True}, 422, "validation_error", "points"),
    ("award", {"points": 1_000_000_001}, 422, "validation_error", "points"),
    ("award", {"reason": ""}, 422, "validation_error", "reason"),
    ("award", {"reason": "   "}, 422, "validation_error", "reason"),
    ("award", {"reason": None}, 422, "validation_error", "reason"),
    ("award", {"allow_negative": "yes"}, 422, "validation_error", "allow_negative"),
    ("award", {"reference": "x" * 201}, 422, "validation_error", "reference"),
    ("award", {"metadata": [1]}, 422, "validation_error", "metadata"),
    ("award", {"member_id": "m"}, 422, "validation_error", "member_id"),
    ("spent", {"points": 61}, 422, "insufficient_points", "points"),
    ("pending", {}, 409, "not_reversible", None),
    ("cancelled", {}, 409, "not_reversible", None),
    ("reversed", {}, 409, "not_reversible", None),
    ("reversal", {}, 409, "not_reversible", None),
    ("redeem", {}, 409, "not_reversible", None),
    ("expire", {}, 409, "not_reversible", None),
    ("transfer_out", {}, 409, "not_reversible", None),
    ("txn_01HZZZZZZZZZZZZZZZZZZZZZZZ", {}, 404, "transaction_not_found", None),
    ("theirs", {}, 404, "transaction_not_found", None),
]


@pytest.fixture
def rows(api: Api, clock: FakeClock) -> dict[str, str]:
    """One transaction of each kind a reversal may be asked of, by name."""
    api.member("m")
    api.member("b")
    found: dict[str, str] = {}
    found["award"] = api.award("m", 100)["transaction_id"]
    found["spent"] = api.award("b", 100)["transaction_id"]
    deducted(api, "b", 40)
    api.award("m", 5, expires_at=stamp("2026-01-01T13:00"))
    move_to(clock, "2026-01-01T14:00")
    found["expire"] = api.history("m", type="expire")[0]["transaction_id"]
    found["pending"] = api.award("m", 10, available_at=stamp("2026-06-01"))["transaction_id"]
    found["cancelled"] = api.award("m", 10, available_at=stamp("2026-06-01"))["transaction_id"]
    assert api.post(f"/v1/transactions/{found['cancelled']}/cancel").status_code == 200
    found["reversed"] = api.award("m", 7)["transaction_id"]
    found["reversal"] = reversed_(api, found["reversed"])["transaction_id"]
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 5}).json()["data"]
    redemption = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward["reward_id"]})
    found["redeem"] = redemption.json()["data"]["transaction_id"]
    transfer = api.post(
        "/v1/points/transfer",
        {"from_member_id": "m", "to_member_id": "b", "points": 1, "reason": "x"},
    )
    found["transfer_out"] = transfer.json()["data"]["from"]["transaction_id"]
    other = api.key_for("other")
    assert api.post("/v1/members", {"member_id": "x"}, key=other).status_code == 201
    theirs = api.post("/v1/points/award", {"member_id": "x", "points": 5, "reason": "r"}, key=other)
    found["theirs"] = theirs.json()["data"]["transaction_id"]
    return found


@pytest.mark.parametrize(("which", "fields", "status", "code", "field"), REFUSALS)
def test_a_refused_reversal_changes_nothing(
    api: Api,
    rows: dict[str, str],
    which: str,
    fields: dict[str, Any],
    status: int,
    code: str,
    field: str | None,
) -> None:
    target = rows.get(which, which)
    before = everything(api)
    response = send(api, target, idem="refused", **fields)
    assert error_code(response) == (status, code), response.text
    error = response.json()["error"]
    if field is not None:
        assert field in [d.get("field") for d in error.get("details", [])], error
    if code == "transaction_not_found":  # another program's reads as one that is nowhere
        assert error["message"] == f"Transaction {target} does not exist."
    assert everything(api) == before
    # No reversal event beyond the one the fixture made (see `reversal_events`).
    reversals = reversal_events(api)
    assert len(reversals) <= 1
    assert all(data["reverses"] == rows["reversed"] for _, data in reversals)


def test_a_read_key_may_not_reverse(api: Api, award: str) -> None:
    response = api.post(
        f"/v1/transactions/{award}/reverse",
        {"reason": "x"},
        key=api.key_for("acme", scope=Scope.READ),
    )
    assert error_code(response) == (403, "forbidden")
    assert figures(api, "m") == (100, 100, 0)


def test_a_reversal_brings_the_member_up_to_date_first(api: Api, clock: FakeClock) -> None:
    api.member("m")
    award = api.award("m", 100, expires_at=stamp("2026-02-01"))["transaction_id"]
    pending = api.award("m", 20, available_at=stamp("2026-01-15"))["transaction_id"]
    move_to(clock, "2026-02-02")  # the 100 expired, the 20 posted
    refused = send(api, award, points=1)
    assert error_code(refused) == (422, "insufficient_points")
    assert refused.json()["error"]["details"][0]["available"] == 0
    assert reversed_(api, pending, points=5)["balance_after"] == 15
    made = reversed_(api, award, points=10, allow_negative=True)  # expired points, clawed back
    assert made["balance_after"] == 5
    b = api.balance("m")
    assert (b["balance"], b["lifetime_earned"], b["lifetime_expired"]) == (5, 105, 100)
    check_history(api, "m")
