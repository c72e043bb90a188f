"""A balance as of a past moment (api.md section 9, "The past"): `GET .../balance?as_of=`.

Every test runs on each backend with a FakeClock that starts at 2026-01-01T12:00Z. The answers
are checked against the history itself: the posted rows that had taken effect by the moment,
added up here by type (an oracle independent of the checkpoints the server reads).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from tally.service.accounts import CHECKPOINT_EVERY
from tests.ledger_support import (
    at,
    effective_at,
    error_code,
    full_history,
    move_to,
    program_id,
    stamp,
)
from tests.support import Api, FakeClock

# Which counter each type of row adds to, and with which sign (the oracle's own table).
_COUNTS = {
    "award": ("lifetime_earned", 1),
    "deduct": ("lifetime_deducted", -1),
    "redeem": ("lifetime_redeemed", -1),
    "refund": ("lifetime_redeemed", -1),
    "expire": ("lifetime_expired", -1),
    "transfer_in": ("lifetime_transferred_in", 1),
    "transfer_out": ("lifetime_transferred_out", -1),
}
_ZERO = {
    "balance": 0,
    "lifetime_earned": 0,
    "lifetime_redeemed": 0,
    "pending": 0,
    "lifetime_deducted": 0,
    "lifetime_expired": 0,
    "lifetime_transferred_in": 0,
    "lifetime_transferred_out": 0,
    "next_expiration": None,
}


def as_of(api: Api, member_id: str, moment: datetime | str) -> dict[str, Any]:
    response = api.get(f"/v1/members/{member_id}/balance", as_of=stamp(moment))
    assert response.status_code == 200, response.text
    data = dict(response.json()["data"])
    assert data.pop("member_id") == member_id
    return data


def counters_then(rows: list[dict[str, Any]], moment: datetime) -> dict[str, int]:
    """The counters the posted rows that had taken effect by `moment` add up to."""
    counters = {name: 0 for name, _ in _COUNTS.values()}
    balance = 0
    for row in rows:
        if row["status"] == "posted" and effective_at(row) <= moment:
            name, sign = _COUNTS[row["type"]]
            counters[name] += sign * row["points"]
            balance += row["points"]
    return {"balance": balance, **counters}


def without(data: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in names}


def test_the_balance_at_each_moment_adds_up_the_rows_that_had_taken_effect(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    api.member("friend")
    api.award("friend", 500)
    moments = [clock()]
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 40}).json()["data"]
    for day in range(1, 8):
        move_to(clock, clock() + timedelta(days=1))
        api.award("m", 100 * day, expires_at=stamp(clock() + timedelta(days=3)))
        api.award("m", 7)  # never expires
        moments.append(clock())
        clock.advance(hours=1)
        assert api.deduct("m", 15).status_code == 201
        redeemed = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward["reward_id"]})
        assert redeemed.status_code == 201, redeemed.text
        if day % 2:
            cancel = f"/v1/redemptions/{redeemed.json()['data']['redemption_id']}/cancel"
            assert api.post(cancel).status_code == 200
        moments.append(clock())
        clock.advance(hours=1)
        body = {"from_member_id": "friend", "to_member_id": "m", "points": 10, "reason": "gift"}
        assert api.post("/v1/points/transfer", body).status_code == 201
        body = {"from_member_id": "m", "to_member_id": "friend", "points": 3, "reason": "back"}
        assert api.post("/v1/points/transfer", body).status_code == 201
        moments.append(clock() - timedelta(microseconds=1))
        moments.append(clock())
    move_to(clock, clock() + timedelta(days=5))  # the last lots expire on the way
    rows = full_history(api, "m")
    assert any(row["type"] == "expire" for row in rows)
    for moment in moments + [clock()]:
        then = as_of(api, "m", moment)
        assert without(then, "pending", "next_expiration") == counters_then(rows, moment), moment
        assert then["pending"] == 0
    assert as_of(api, "m", clock()) == without(api.balance("m"), "member_id")


def test_a_member_with_thousands_of_rows_is_answered_from_its_checkpoints(
    api: Api, clock: FakeClock
) -> None:
    api.member("busy")
    moments = []
    items = CHECKPOINT_EVERY + 44
    for round_ in range(4):  # more than 1,000 rows, across several checkpoints, over four days
        move_to(clock, clock() + timedelta(days=1))
        awards = [{"member_id": "busy", "points": 1 + i % 5, "reason": "r"} for i in range(items)]
        response = api.post("/v1/points/award/bulk", {"awards": awards})
        assert response.json()["data"]["processed"] == items
        moments.append(clock())
        for n in range(round_ + 3):
            clock.advance(minutes=10)
            assert api.deduct("busy", 2 + n).status_code == 201
            moments.append(clock())
            moments.append(clock() - timedelta(minutes=5))
    rows = full_history(api, "busy")
    assert len(rows) > 3 * CHECKPOINT_EVERY
    # The latest of them is read from a checkpoint and at most CHECKPOINT_EVERY rows after it.
    pid = program_id(api.store)
    member = api.store.transact(lambda tx: tx.members.get(pid, "busy"))
    assert member is not None
    past = api.store.transact(lambda tx: tx.reports.past(member.pk, at=moments[-1]))
    assert past.checkpoint.balance > 0 and len(past.entries) < CHECKPOINT_EVERY
    for moment in moments:
        then = as_of(api, "busy", moment)
        assert without(then, "pending", "next_expiration") == counters_then(rows, moment), moment


def test_pending_points_count_as_pending_until_they_post_or_are_cancelled(
    api: Api, clock: FakeClock
) -> None:
    api.member("p")
    start = clock()
    kept = api.award("p", 300, available_at=stamp("2026-01-10"), expires_at=stamp("2026-03-01"))
    dropped = api.award("p", 40, available_at=stamp("2026-01-20"))
    move_to(clock, "2026-01-05")
    assert api.post(f"/v1/transactions/{dropped['transaction_id']}/cancel").status_code == 200
    move_to(clock, "2026-01-15")  # the 300 posted on 2026-01-10, when a read brought it in
    assert kept["status"] == "pending"

    def seen(moment: str | datetime) -> tuple[int, int, Any]:
        then = as_of(api, "p", moment)
        return then["balance"], then["pending"], then["next_expiration"]

    assert seen(start - timedelta(seconds=1)) == (0, 0, None)  # before the member existed
    assert seen(start) == (0, 340, None)
    assert seen("2026-01-04T23:59:59Z") == (0, 340, None)
    assert seen("2026-01-05") == (0, 300, None)  # cancelled then
    assert seen("2026-01-09T23:59:59.999999Z") == (0, 300, None)
    in_march = {"points": 300, "expires_at": "2026-03-01T00:00:00Z"}
    assert seen("2026-01-10") == (300, 0, in_march)  # posted at its available_at
    assert seen("2026-01-15") == (300, 0, in_march)
    assert as_of(api, "p", "2026-01-15")["lifetime_earned"] == 300


def test_the_soonest_expiry_is_as_it_stood_then_and_expired_points_leave_on_time(
    api: Api, clock: FakeClock
) -> None:
    api.member("x")
    api.award("x", 100, expires_at=stamp("2026-02-01"))
    api.award("x", 50, expires_at=stamp("2026-03-01"))
    move_to(clock, "2026-01-10")
    assert api.deduct("x", 30).status_code == 201  # 70 of February's lot left
    move_to(clock, "2026-04-01")  # both expire; nobody reads x until now
    assert api.balance("x")["balance"] == 0

    def seen(moment: str) -> tuple[int, int, Any]:
        then = as_of(api, "x", moment)
        return then["balance"], then["lifetime_expired"], then["next_expiration"]

    feb = "2026-02-01T00:00:00Z"
    mar = "2026-03-01T00:00:00Z"
    assert seen("2026-01-05") == (150, 0, {"points": 100, "expires_at": feb})
    assert seen("2026-01-10") == (120, 0, {"points": 70, "expires_at": feb})
    assert seen("2026-01-31T23:59:59Z") == (120, 0, {"points": 70, "expires_at": feb})
    assert seen("2026-02-01") == (50, 70, {"points": 50, "expires_at": mar})
    assert seen("2026-03-01") == (0, 120, None)


def test_what_falls_due_by_the_moment_is_applied_first_even_if_nobody_read_the_member(
    api: Api, clock: FakeClock
) -> None:
    api.member("late")
    api.award("late", 80, expires_at=stamp("2026-01-03"))
    api.award("late", 20, available_at=stamp("2026-01-02"))
    move_to(clock, "2026-01-04")
    then = as_of(api, "late", "2026-01-03T12:00:00Z")  # the first read since
    assert (then["balance"], then["pending"], then["lifetime_expired"]) == (20, 0, 80)
    assert as_of(api, "late", "2026-01-02T12:00:00Z")["balance"] == 100


def test_as_of_in_the_future_or_malformed_is_refused_naming_it(api: Api, clock: FakeClock) -> None:
    api.member("f")
    api.award("f", 10)
    later = stamp(clock() + timedelta(seconds=1))
    for text in (later, "2026-13-01T00:00:00Z", "2026-01-01", "2026-01-01T10:00:00", "soon", ""):
        response = api.get("/v1/members/f/balance", as_of=text)
        assert error_code(response) == (422, "validation_error"), text
        assert response.json()["error"]["details"][0]["field"] == "as_of"
    assert as_of(api, "f", clock())["balance"] == 10  # now itself is not the future
    offset = api.get("/v1/members/f/balance", as_of="2026-01-01T14:00:00+02:00")
    assert offset.json()["data"]["balance"] == 10  # 12:00 UTC


@pytest.mark.parametrize("member_id", ["nobody", "theirs"])
def test_an_unknown_or_foreign_member_is_not_found(api: Api, member_id: str) -> None:
    other = api.key_for("other")
    api.post("/v1/members", {"member_id": "theirs"}, key=other)
    response = api.get(f"/v1/members/{member_id}/balance", as_of=stamp(at("2026-01-01")))
    assert error_code(response) == (404, "member_not_found")
