"""The program report (api.md section 9): `GET /v1/program/report?from&to&interval`.

Every test runs on each backend with a FakeClock that starts at 2026-01-01T12:00Z (a Thursday).
Each period's figures are checked against the members' histories, added up here; after every
test the `api` fixture runs `tally verify`, which recomputes the report's running totals from
the ledger.
"""

from __future__ import annotations

import bisect
import sqlite3
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from tally.domain import Scope
from tally.maintenance import verify
from tally.ports import Store
from tests.ledger_support import effective_at, error_code, full_history, move_to, stamp
from tests.support import Api, FakeClock

_FIGURE = {
    "award": "awarded",
    "deduct": "deducted",
    "redeem": "redeemed",
    "refund": "refunded",
    "expire": "expired",
    "transfer_in": "transferred",
    "reversal": "reversed",
}
_FIGURES = ("awarded", "deducted", "redeemed", "refunded", "expired", "transferred", "reversed")


def report(api: Api, **params: str) -> dict[str, Any]:
    response = api.get("/v1/program/report", **params)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def periods_from_histories(
    api: Api, members: list[str], starts: list[date], last: date
) -> list[dict[str, Any]]:
    """Each period's figures, added up from every member's history (the test's own oracle)."""
    figures = [dict.fromkeys(_FIGURES, 0) for _ in starts]
    for member_id in members:
        for row in full_history(api, member_id):
            day = effective_at(row).date()
            if row["status"] == "posted" and starts[0] <= day <= last and row["type"] in _FIGURE:
                figures[bisect.bisect_right(starts, day) - 1][_FIGURE[row["type"]]] += row["points"]
    return [{"start": start.isoformat(), **f} for start, f in zip(starts, figures, strict=True)]


def busy_program(api: Api, clock: FakeClock) -> list[str]:
    """Three members over two months: awards (one pending), deducts, a redemption refunded,
    transfers, and lots that expire on the way (on a Monday and on a month's first day)."""
    for member_id in ("a", "b", "c"):
        api.member(member_id)
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 25}).json()["data"]
    api.award("a", 100, expires_at=stamp("2026-01-05"))  # a Monday
    api.award("b", 200, expires_at=stamp("2026-02-01"))
    api.award("c", 40, available_at=stamp("2026-01-03T09:00"))  # posts on the 3rd
    move_to(clock, "2026-01-02T10:00")
    assert api.deduct("a", 30).status_code == 201
    body = {"from_member_id": "b", "to_member_id": "c", "points": 50, "reason": "gift"}
    assert api.post("/v1/points/transfer", body).status_code == 201
    move_to(clock, "2026-01-04T23:59:59")
    made = api.post("/v1/redemptions", {"member_id": "b", "reward_id": reward["reward_id"]})
    assert made.status_code == 201, made.text
    move_to(clock, "2026-01-05T00:00:01")  # a's 70 left expired at midnight
    cancel = f"/v1/redemptions/{made.json()['data']['redemption_id']}/cancel"
    assert api.post(cancel).status_code == 200
    move_to(clock, "2026-01-20")
    api.award("a", 15)
    assert api.deduct("c", 5).status_code == 201
    move_to(clock, "2026-02-10")  # b's lot expired on 2026-02-01
    api.award("c", 7, expires_at=stamp("2026-03-01"))
    api.award("b", 9, available_at=stamp("2026-03-15"))  # still pending
    return ["a", "b", "c"]


def test_each_day_adds_up_the_rows_that_took_effect_on_it(api: Api, clock: FakeClock) -> None:
    members = busy_program(api, clock)
    got = report(api, **{"from": "2026-01-01", "to": "2026-02-10"})
    assert (got["from"], got["to"], got["interval"]) == ("2026-01-01", "2026-02-10", "day")
    starts = [date(2026, 1, 1) + timedelta(days=n) for n in range(41)]
    assert got["periods"] == periods_from_histories(api, members, starts, date(2026, 2, 10))
    days = {p["start"]: p for p in got["periods"]}
    assert days["2026-01-01"]["awarded"] == 300  # the pending 40 counts when it posts
    assert days["2026-01-03"]["awarded"] == 40
    assert days["2026-01-05"]["expired"] == -70
    assert (days["2026-01-04"]["redeemed"], days["2026-01-05"]["refunded"]) == (-25, 25)
    assert days["2026-01-02"]["transferred"] == 50
    assert days["2026-02-01"]["expired"] == -170  # b's 125 and the 45 c got from b


def test_weeks_start_on_monday_and_months_on_the_first(api: Api, clock: FakeClock) -> None:
    members = busy_program(api, clock)
    weekly = report(api, **{"from": "2026-01-01", "to": "2026-02-10", "interval": "week"})
    starts = [date(2026, 1, 1)] + [date(2026, 1, 5) + timedelta(weeks=n) for n in range(6)]
    assert [p["start"] for p in weekly["periods"]] == [d.isoformat() for d in starts]
    assert weekly["periods"] == periods_from_histories(api, members, starts, date(2026, 2, 10))
    assert weekly["periods"][0]["expired"] == 0 and weekly["periods"][1]["expired"] == -70
    monthly = report(api, **{"from": "2026-01-15", "to": "2026-03-31", "interval": "month"})
    starts = [date(2026, 1, 15), date(2026, 2, 1), date(2026, 3, 1)]
    assert monthly["periods"] == periods_from_histories(api, members, starts, date(2026, 3, 31))
    assert monthly["periods"][1]["expired"] == -170
    assert monthly["members"] == {"total": 3, "active_in_period": 3}
    january = report(api, **{"from": "2026-01-06", "to": "2026-01-31"})
    assert january["members"] == {"total": 3, "active_in_period": 2}  # a and c, on the 20th


def test_the_outstanding_points_and_what_expires_soon_are_the_members_own(
    api: Api, clock: FakeClock
) -> None:
    members = busy_program(api, clock)
    got = report(api)
    balances = [api.balance(m) for m in members]
    assert got["outstanding"] == {
        "balance": sum(b["balance"] for b in balances),
        "pending": sum(b["pending"] for b in balances),
    }
    assert got["outstanding"]["pending"] == 9
    # c's 7 expire on 2026-03-01, within 30 days of 2026-02-10; nothing else ever expires.
    assert got["expiring"] == [
        {"before": "2026-03-12T00:00:00Z", "points": 7},
        {"before": "2026-04-11T00:00:00Z", "points": 7},
        {"before": "2026-05-11T00:00:00Z", "points": 7},
    ]
    # The default range: the 30 days up to today.
    assert (got["from"], got["to"], len(got["periods"])) == ("2026-01-12", "2026-02-10", 30)


def test_days_kept_as_running_totals_answer_the_same_as_the_entries(
    api: Api, clock: FakeClock, store: Store
) -> None:
    members = busy_program(api, clock)
    rolled = store.transact(lambda tx: tx.reports.rolled_up_until(1))
    params = {"from": "2026-01-01", "to": "2026-02-10"}
    first = report(api, **params)
    after = store.transact(lambda tx: tx.reports.rolled_up_until(1))
    assert rolled is None and after is not None and after.date() == date(2026, 2, 9)
    move_to(clock, "2026-03-20")  # c's lot expires and b's award posts on the way
    later = report(api, **params)
    assert later["periods"] == first["periods"]
    starts = [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]
    monthly = report(api, **{"from": "2026-01-01", "to": "2026-03-20", "interval": "month"})
    assert monthly["periods"] == periods_from_histories(api, members, starts, date(2026, 3, 20))
    assert monthly["periods"][2]["expired"] == -7 and monthly["periods"][2]["awarded"] == 9


def test_a_running_total_that_disagrees_with_the_ledger_is_found_by_verify(
    api: Api, clock: FakeClock, store: Store, database_url: str
) -> None:
    busy_program(api, clock)
    report(api)
    assert verify(store) == []
    run_sql(database_url, "UPDATE report_days SET points = points + 1 WHERE type = 'award'")
    found = verify(store)
    assert found and all("award total" in problem.problem for problem in found)
    run_sql(database_url, "UPDATE report_days SET points = points - 1 WHERE type = 'award'")
    assert verify(store) == []


def run_sql(database_url: str, sql: str) -> None:
    """A statement straight on the database, behind the ledger's back."""
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
        return
    with psycopg.connect(database_url) as conn:
        conn.execute(sql)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-02-01", "to": "2026-01-01"}, "from"),
        ({"from": "2026-02-30"}, "from"),
        ({"to": "2026-01-01T10:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00"}, "from"),
        ({"interval": "year"}, "interval"),
        ({"interval": ""}, "interval"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "from"),  # 2,193 days
        ({"from": "1990-01-01", "to": "2026-01-01", "interval": "month"}, "from"),
    ],
)
def test_a_bad_range_or_interval_is_refused_naming_the_field(
    api: Api, params: dict[str, str], field: str
) -> None:
    response = api.get("/v1/program/report", **params)
    assert error_code(response) == (422, "validation_error"), response.text
    assert response.json()["error"]["details"][0]["field"] == field


def test_midnights_bound_the_range_as_the_console_sends_them(api: Api, clock: FakeClock) -> None:
    busy_program(api, clock)
    by_days = report(api, **{"from": "2026-01-01", "to": "2026-01-31", "interval": "week"})
    by_midnights = report(
        api,
        **{"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "interval": "week"},
    )
    assert by_midnights == by_days
    assert (by_midnights["from"], by_midnights["to"]) == ("2026-01-01", "2026-01-31")
    offset = report(api, **{"from": "2026-01-01T02:00:00+02:00", "to": "2026-01-31"})
    assert offset["from"] == "2026-01-01"


def test_a_read_key_may_ask_and_sees_only_its_own_program(api: Api) -> None:
    api.member("mine")
    api.award("mine", 10)
    other = api.key_for("other")
    api.post("/v1/members", {"member_id": "theirs"}, key=other)
    body = {"member_id": "theirs", "points": 99, "reason": "r"}
    assert api.post("/v1/points/award", body, key=other).status_code == 201
    got = report(api, key=api.key_for("acme", Scope.READ))
    assert got["outstanding"] == {"balance": 10, "pending": 0}
    assert got["members"] == {"total": 1, "active_in_period": 1}
    assert sum(p["awarded"] for p in got["periods"]) == 10
