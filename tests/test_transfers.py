"""Transfers between members (api.md section 9): `POST /v1/points/transfer`.

Every test runs on each backend with a FakeClock that starts at 2026-01-01T12:00Z; after each one
the `api` fixture checks that `tally verify` finds the ledger consistent (counters, the
balance_after chains, and every transfer's draws and lots).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

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


def send(api: Api, sender: str, receiver: str, points: int, **fields: Any) -> httpx.Response:
    body = {
        "from_member_id": sender,
        "to_member_id": receiver,
        "points": points,
        "reason": "gift",
        **fields,
    }
    idem = fields.pop("idem", None)
    body.pop("idem", None)
    return api.post("/v1/points/transfer", body, idem=idem)


def transferred(api: Api, sender: str, receiver: str, points: int, **fields: Any) -> dict[str, Any]:
    response = send(api, sender, receiver, points, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


@pytest.fixture
def pair(api: Api) -> Api:
    """Members `a` (100 expiring 2026-03-01, 50 expiring 2026-06-01, 30 never) and `b` (10)."""
    api.member("a")
    api.member("b")
    api.award("a", 30)
    api.award("a", 50, expires_at=stamp("2026-06-01"))
    api.award("a", 100, expires_at=stamp("2026-03-01"))
    api.award("b", 10)
    return api


def test_a_transfer_moves_points_as_two_rows_that_read_like_any_transaction(pair: Api) -> None:
    api = pair
    made = transferred(api, "a", "b", 120, reference="R-1", metadata={"why": "birthday"})
    assert made["transfer_id"].startswith("trf_")
    out, into = made["from"], made["to"]
    assert (out["member_id"], out["type"], out["points"], out["balance_after"]) == (
        "a",
        "transfer_out",
        -120,
        60,
    )
    assert (into["member_id"], into["type"], into["points"], into["balance_after"]) == (
        "b",
        "transfer_in",
        120,
        130,
    )
    for row in (out, into):
        assert (row["status"], row["reason"], row["reference"], row["metadata"]) == (
            "posted",
            "gift",
            "R-1",
            {"why": "birthday"},
        )
        # The same shape, and the same values, as GET /v1/transactions/{id}.
        assert transaction(api, row["transaction_id"]) == row
    assert api.history("a")[0] == out and api.history("b")[0] == into
    assert api.history("a", type="transfer_out") == [out]
    assert api.history("b", type="transfer_in") == [into]
    assert api.history("a", type="transfer_in") == []
    a, b = api.balance("a"), api.balance("b")
    assert (a["balance"], a["lifetime_transferred_out"], a["lifetime_transferred_in"]) == (
        60,
        120,
        0,
    )
    assert (b["balance"], b["lifetime_transferred_in"], b["lifetime_transferred_out"]) == (
        130,
        120,
        0,
    )
    assert counters_add_up(a) and counters_add_up(b)
    for member_id, balance in (("a", 60), ("b", 130)):
        assert_ledger_order(full_history(api, member_id), balance)


def test_the_points_keep_their_expiry_dates_and_expire_at_the_receiver_on_time(
    pair: Api, clock: FakeClock
) -> None:
    api = pair
    # 120 leaves a's lots soonest first: all 100 of 2026-03-01, then 20 of 2026-06-01.
    made = transferred(api, "a", "b", 120)
    assert made["to"]["expires_at"] == "2026-03-01T00:00:00Z"  # the soonest of what it brought
    assert lot_remainders(api.store, "a") == [30, 30]  # 30 of 2026-06-01, 30 never
    assert lot_remainders(api.store, "b") == [100, 20, 10]
    assert api.balance("b")["next_expiration"] == {
        "points": 100,
        "expires_at": "2026-03-01T00:00:00Z",
    }
    move_to(clock, "2026-03-01")
    b = api.balance("b")
    assert (b["balance"], b["lifetime_expired"]) == (30, 100)
    expired = api.history("b", type="expire")
    assert [(r["points"], r["created_at"]) for r in expired] == [(-100, "2026-03-01T00:00:00Z")]
    assert made["to"]["transaction_id"] in expired[0]["reason"]
    assert api.balance("a")["balance"] == 60  # nothing of a's expired then
    move_to(clock, "2026-06-01")
    a, b = api.balance("a"), api.balance("b")
    assert (a["balance"], a["lifetime_expired"]) == (30, 30)
    assert (b["balance"], b["lifetime_expired"]) == (10, 120)
    assert counters_add_up(a) and counters_add_up(b)
    assert_ledger_order(full_history(api, "b"), 10)


def test_the_receiver_spends_transferred_points_in_their_own_expiry_order(pair: Api) -> None:
    api = pair
    transferred(api, "a", "b", 120)  # b: 100 of 2026-03-01, 20 of 2026-06-01, its own 10 never
    assert api.deduct("b", 105).status_code == 201
    assert lot_remainders(api.store, "b") == [15, 10]
    transferred(api, "b", "a", 20)  # 15 of 2026-06-01 and 5 never go back, as lots of their own
    assert lot_remainders(api.store, "a") == [30, 15, 30, 5]


def test_a_transfer_writes_one_transaction_created_event_per_row(pair: Api) -> None:
    api = pair
    before = len(poll(api))
    made = transferred(api, "a", "b", 40)
    events = poll(api)[before:]
    assert [(e["type"], e["data"]) for e in events] == [
        ("transaction.created", made["from"]),
        ("transaction.created", made["to"]),
    ]


def test_a_retried_transfer_has_exactly_one_effect(pair: Api) -> None:
    api = pair
    first = send(api, "a", "b", 40, idem="t-1")
    events = len(poll(api))
    again = send(api, "a", "b", 40, idem="t-1")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(poll(api)) == events
    assert (api.balance("a")["balance"], api.balance("b")["balance"]) == (140, 50)
    other = send(api, "a", "b", 41, idem="t-1")
    assert error_code(other) == (422, "idempotency_key_reused")


REFUSALS = [
    # (body fields, status, code, field)
    ({"points": 181}, 422, "insufficient_points", "points"),
    ({"to_member_id": "a"}, 422, "validation_error", "to_member_id"),
    ({"from_member_id": "ghost"}, 404, "member_not_found", None),
    ({"to_member_id": "ghost"}, 404, "member_not_found", None),
    ({"to_member_id": "theirs"}, 404, "member_not_found", None),
    ({"points": 0}, 422, "validation_error", "points"),
    ({"points": 1.5}, 422, "validation_error", "points"),
    ({"points": "5"}, 422, "validation_error", "points"),
    ({"reason": ""}, 422, "validation_error", "reason"),
    ({"reference": "x" * 201}, 422, "validation_error", "reference"),
    ({"metadata": [1]}, 422, "validation_error", "metadata"),
    ({"from_member_id": None}, 422, "validation_error", "from_member_id"),
    ({"to_member_id": "bad id!"}, 422, "validation_error", "to_member_id"),
    ({"member_id": "a"}, 422, "validation_error", "member_id"),
]


@pytest.mark.parametrize(("fields", "status", "code", "field"), REFUSALS)
def test_a_refused_transfer_changes_nothing(
    pair: Api, fields: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    api = pair
    other = api.key_for("other")
    assert api.post("/v1/members", {"member_id": "theirs"}, key=other).status_code == 201
    before, events = everything(api), len(poll(api))
    body = {"from_member_id": "a", "to_member_id": "b", "points": 5, "reason": "gift", **fields}
    response = api.post("/v1/points/transfer", body, idem="refused")
    assert error_code(response) == (status, code), response.text
    error = response.json()["error"]
    if field is not None:
        assert field in [d.get("field") for d in error.get("details", [])], error
    if code == "member_not_found":  # another program's member reads as one that is nowhere
        named = fields.get("from_member_id") or fields.get("to_member_id")
        assert error["message"] == f"Member {named} does not exist."
    assert everything(api) == before
    assert len(poll(api)) == events


def test_another_programs_member_looks_exactly_like_one_that_does_not_exist(pair: Api) -> None:
    api = pair
    other = api.key_for("other")
    assert api.post("/v1/members", {"member_id": "c"}, key=other).status_code == 201
    theirs = send(api, "a", "c", 5)
    nobody = send(api, "a", "zed", 5)
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["error"]["message"].replace("c", "?") == nobody.json()["error"][
        "message"
    ].replace("zed", "?")


def test_a_transfer_brings_both_members_up_to_date_first(pair: Api, clock: FakeClock) -> None:
    api = pair
    api.award("b", 25, available_at=stamp("2026-02-01"))
    move_to(clock, "2026-03-02")  # a's 100 have expired, b's pending 25 have posted
    response = send(api, "a", "b", 81)
    assert error_code(response) == (422, "insufficient_points")
    assert response.json()["error"]["details"][0]["available"] == 80
    made = transferred(api, "a", "b", 80)
    assert (made["from"]["balance_after"], made["to"]["balance_after"]) == (0, 115)
    a, b = api.balance("a"), api.balance("b")
    assert (a["lifetime_expired"], b["lifetime_earned"], b["pending"]) == (100, 35, 0)
    assert counters_add_up(a) and counters_add_up(b)
    for member_id, balance in (("a", 0), ("b", 115)):
        assert_ledger_order(full_history(api, member_id), balance)
