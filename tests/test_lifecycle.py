"""Points over time (spec sections 4 and 5): pending awards, cancels, lots, expiry, the policy.

Every test runs on each backend with a FakeClock that starts at 2026-01-01T12:00Z and only moves
when a test moves it. After every test the `api` fixture checks that `verify` finds the ledger
consistent; sweep tests also check it straight after sweeping, before any read catches up.
"""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tally.domain import Scope
from tally.maintenance import verify
from tally.storage import open_store
from tests.ledger_support import (
    assert_ledger_order,
    at,
    counters_add_up,
    effective_at,
    error_code,
    full_history,
    lot_remainders,
    move_to,
    stamp,
    stored_balance,
    sweep,
    transaction,
)
from tests.support import Api, FakeClock, tally_command

START = "2026-01-01T12:00"


def award(
    api: Api, member_id: str, points: int, *, expires: str | None = None, **fields: Any
) -> dict[str, Any]:
    """An award, with `expires` (a date or time) as its expires_at."""
    if expires is not None:
        fields["expires_at"] = stamp(expires)
    return api.award(member_id, points, **fields)


def deduct(api: Api, member_id: str, points: int) -> dict[str, Any]:
    response = api.deduct(member_id, points)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def cancel(api: Api, transaction_id: str) -> Any:
    return api.post(f"/v1/transactions/{transaction_id}/cancel")


# Pending awards


def test_an_award_available_later_is_pending_and_counts_only_in_pending(api: Api) -> None:
    api.member("m")
    award(api, "m", 30)
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    assert (created["status"], created["new_balance"], created["points"]) == ("pending", 30, 100)
    assert created["available_at"] == "2026-01-05T00:00:00Z"
    balance = api.balance("m")
    assert (balance["balance"], balance["pending"], balance["lifetime_earned"]) == (30, 100, 30)
    row = api.history("m")[0]
    assert (row["transaction_id"], row["status"], row["balance_after"]) == (
        created["transaction_id"],
        "pending",
        None,
    )


def test_pending_points_cannot_be_deducted(api: Api) -> None:
    api.member("m")
    award(api, "m", 50)
    award(api, "m", 100, available_at=stamp("2026-01-05"))
    response = api.deduct("m", 60)
    assert error_code(response) == (422, "insufficient_points")
    assert response.json()["error"]["details"][0]["available"] == 50
    assert api.balance("m")["balance"] == 50
    assert api.balance("m")["pending"] == 100


def test_a_pending_award_is_still_pending_just_before_available_at(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    move_to(clock, at("2026-01-05") - timedelta(microseconds=1))
    assert (api.balance("m")["balance"], api.balance("m")["pending"]) == (0, 100)
    assert transaction(api, created["transaction_id"])["status"] == "pending"


def test_a_pending_award_posts_by_itself_at_available_at(api: Api, clock: FakeClock) -> None:
    api.member("m")
    award(api, "m", 30)
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    move_to(clock, "2026-01-05")
    balance = api.balance("m")
    assert (balance["balance"], balance["pending"], balance["lifetime_earned"]) == (130, 0, 130)
    row = api.history("m")[0]
    assert row["transaction_id"] == created["transaction_id"]
    assert (row["status"], row["balance_after"], row["posted_at"]) == (
        "posted",
        130,
        "2026-01-05T00:00:00Z",
    )
    fetched = transaction(api, created["transaction_id"])
    assert (fetched["status"], fetched["balance_after"], fetched["member_id"]) == (
        "posted",
        130,
        "m",
    )
    assert fetched["created_at"] == "2026-01-01T12:00:00Z"


def test_a_pending_award_posts_when_the_first_read_is_of_the_transaction_itself(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    move_to(clock, "2026-01-09")
    fetched = transaction(api, created["transaction_id"])
    assert (fetched["status"], fetched["balance_after"], fetched["posted_at"]) == (
        "posted",
        100,
        "2026-01-05T00:00:00Z",
    )
    assert api.balance("m")["balance"] == 100


def test_a_write_on_the_member_first_posts_what_has_become_available(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    award(api, "m", 100, available_at=stamp("2026-01-05"))
    move_to(clock, "2026-01-06")
    spent = deduct(api, "m", 100)
    assert spent["new_balance"] == 0
    balance = api.balance("m")
    assert (balance["lifetime_earned"], balance["lifetime_deducted"], balance["pending"]) == (
        100,
        100,
        0,
    )


@pytest.mark.parametrize("available", ["2026-01-01T12:00", "2025-12-01"], ids=["now", "earlier"])
def test_an_award_available_now_or_earlier_posts_at_once(api: Api, available: str) -> None:
    api.member("m")
    created = award(api, "m", 100, available_at=stamp(available))
    assert (created["status"], created["new_balance"]) == ("posted", 100)
    assert api.balance("m")["pending"] == 0


def test_times_given_with_an_offset_are_converted_to_utc(api: Api) -> None:
    api.member("m")
    created = award(
        api,
        "m",
        100,
        available_at="2026-01-05T14:00:00+02:00",
        expires_at="2026-01-31T00:00:00-05:00",
    )
    stored = transaction(api, created["transaction_id"])
    assert (stored["available_at"], stored["expires_at"]) == (
        "2026-01-05T12:00:00Z",
        "2026-01-31T05:00:00Z",
    )
    assert (created["available_at"], created["expires_at"]) == (
        "2026-01-05T12:00:00Z",
        "2026-01-31T05:00:00Z",
    ), "the award's own answer must give its times in UTC too"


@pytest.mark.parametrize("field", ["available_at", "expires_at"])
@pytest.mark.parametrize("value", ["2026-02-01T00:00:00", "tomorrow", 1767225600])
def test_a_time_without_a_zone_or_not_a_time_is_refused(
    api: Api, field: str, value: object
) -> None:
    api.member("m")
    body = {"member_id": "m", "points": 10, "reason": "x", field: value}
    response = api.post("/v1/points/award", body)
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == field
    assert api.history("m") == []


def test_a_pending_award_that_expired_meanwhile_posts_then_expires(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    created = award(api, "m", 100, available_at=stamp("2026-01-05"), expires="2026-01-20")
    assert created["expires_at"] == "2026-01-20T00:00:00Z"
    move_to(clock, "2026-02-01")
    rows = api.history("m")
    assert [(r["type"], r["points"], r["balance_after"], r["status"]) for r in rows] == [
        ("expire", -100, 0, "posted"),
        ("award", 100, 100, "posted"),
    ]
    assert created["transaction_id"] in rows[0]["reason"]
    assert rows[0]["created_at"] == "2026-01-20T00:00:00Z"
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_earned"], balance["lifetime_expired"]) == (
        0,
        100,
        100,
    )


# Cancelling a pending award


def test_cancelling_a_pending_award_takes_it_out_of_pending(api: Api) -> None:
    api.member("m")
    award(api, "m", 30)
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    response = cancel(api, created["transaction_id"])
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["transaction_id"], data["status"], data["balance_after"]) == (
        created["transaction_id"],
        "cancelled",
        None,
    )
    balance = api.balance("m")
    assert (balance["balance"], balance["pending"], balance["lifetime_earned"]) == (30, 0, 30)
    assert transaction(api, created["transaction_id"])["status"] == "cancelled"


def test_a_cancelled_award_never_posts(api: Api, clock: FakeClock) -> None:
    api.member("m")
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    assert cancel(api, created["transaction_id"]).status_code == 200
    move_to(clock, "2026-03-01")
    balance = api.balance("m")
    assert (balance["balance"], balance["pending"], balance["lifetime_earned"]) == (0, 0, 0)
    row = transaction(api, created["transaction_id"])
    assert (row["status"], row["balance_after"]) == ("cancelled", None)


def test_a_second_cancel_is_not_cancellable_and_changes_nothing(api: Api) -> None:
    api.member("m")
    award(api, "m", 40, available_at=stamp("2026-01-06"))
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    assert cancel(api, created["transaction_id"]).status_code == 200
    assert error_code(cancel(api, created["transaction_id"])) == (409, "not_cancellable")
    assert api.balance("m")["pending"] == 40


def test_only_a_pending_award_can_be_cancelled(api: Api, clock: FakeClock) -> None:
    api.member("m")
    posted = award(api, "m", 100, expires="2026-01-10")
    spent = deduct(api, "m", 10)
    move_to(clock, "2026-01-11")
    expired = api.history("m", type="expire")[0]
    for transaction_id in (
        posted["transaction_id"],
        spent["transaction_id"],
        expired["transaction_id"],
    ):
        assert error_code(cancel(api, transaction_id)) == (409, "not_cancellable")
    balance = api.balance("m")
    assert (
        balance["lifetime_earned"],
        balance["lifetime_deducted"],
        balance["lifetime_expired"],
    ) == (
        100,
        10,
        90,
    )
    assert transaction(api, posted["transaction_id"])["status"] == "posted"


def test_cancelling_after_available_at_is_too_late_because_it_has_posted(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    created = award(api, "m", 100, available_at=stamp("2026-01-05"))
    move_to(clock, "2026-01-05T00:00:01")
    # Nobody read the member since: the cancel itself must find the award already posted.
    assert error_code(cancel(api, created["transaction_id"])) == (409, "not_cancellable")
    balance = api.balance("m")
    assert (balance["balance"], balance["pending"], balance["lifetime_earned"]) == (100, 0, 100)
    assert transaction(api, created["transaction_id"])["status"] == "posted"


def test_cancelling_an_unknown_or_another_programs_transaction_is_not_found(api: Api) -> None:
    api.member("m")
    mine = award(api, "m", 100, available_at=stamp("2026-01-05"))
    assert error_code(cancel(api, "txn_nope")) == (404, "transaction_not_found")
    other = api.key_for("other")
    response = api.post(f"/v1/transactions/{mine['transaction_id']}/cancel", key=other)
    assert error_code(response) == (404, "transaction_not_found")
    assert api.balance("m")["pending"] == 100


# History in ledger order


def test_a_pending_award_that_posts_later_appears_where_it_posted(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    award(api, "m", 100)
    pending = award(api, "m", 50, available_at=stamp("2026-01-03"))
    move_to(clock, "2026-01-02")
    deduct(api, "m", 30)
    while_pending = api.history("m")
    assert [(r["points"], r["status"], r["balance_after"]) for r in while_pending] == [
        (-30, "posted", 70),
        (50, "pending", None),
        (100, "posted", 100),
    ]
    assert_ledger_order(while_pending, 70)
    move_to(clock, "2026-01-04")
    rows = api.history("m")
    assert [(r["points"], r["status"], r["balance_after"]) for r in rows] == [
        (50, "posted", 120),
        (-30, "posted", 70),
        (100, "posted", 100),
    ]
    assert rows[0]["transaction_id"] == pending["transaction_id"]
    assert_ledger_order(rows, api.balance("m")["balance"])


def test_a_cancelled_award_stays_where_it_was_made(api: Api, clock: FakeClock) -> None:
    api.member("m")
    award(api, "m", 100)
    move_to(clock, "2026-01-02")
    cancelled = award(api, "m", 50, available_at=stamp("2026-01-10"))
    move_to(clock, "2026-01-03")
    deduct(api, "m", 30)
    assert cancel(api, cancelled["transaction_id"]).status_code == 200
    move_to(clock, "2026-01-11")
    rows = api.history("m")
    assert [(r["points"], r["status"]) for r in rows] == [
        (-30, "posted"),
        (50, "cancelled"),
        (100, "posted"),
    ]
    assert_ledger_order(rows, 70)


def test_maturities_and_expiries_take_their_places_in_the_ledger(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    first = award(api, "m", 100, expires="2026-01-10")
    award(api, "m", 50, available_at=stamp("2026-01-05"), expires="2026-01-20")
    award(api, "m", 20, available_at=stamp("2026-01-15"))
    move_to(clock, "2026-02-01")
    rows = api.history("m")
    assert [(r["type"], r["points"], r["balance_after"]) for r in rows] == [
        ("expire", -50, 20),
        ("award", 20, 70),
        ("expire", -100, 50),
        ("award", 50, 150),
        ("award", 100, 100),
    ]
    assert [effective_at(row) for row in rows] == [
        at("2026-01-20"),
        at("2026-01-15"),
        at("2026-01-10"),
        at("2026-01-05"),
        at(START),
    ]
    assert first["transaction_id"] in rows[2]["reason"]
    assert_ledger_order(rows, 20)
    assert [r["points"] for r in api.history("m", type="expire")] == [-50, -100]


# Expiry scenarios


@dataclass(frozen=True)
class ExpiryCase:
    """Lots awarded at the start, oldest first; deducts at times; then the member is read.

    `expired` lists the expire rows oldest first as (lot index, points, balance_after).
    """

    lots: list[tuple[int, str | None]]
    spends: list[tuple[str, int]]
    read_at: str
    expired: list[tuple[int, int, int]]
    balance: int


EXPIRY_CASES = [
    pytest.param(
        ExpiryCase(
            lots=[(100, "2026-01-31")],
            spends=[("2026-01-10", 100)],
            read_at="2026-02-15",
            expired=[],
            balance=0,
        ),
        id="a-spent-lot-expires-nothing",
    ),
    pytest.param(
        ExpiryCase(
            lots=[(100, "2026-01-31"), (50, None)],
            spends=[("2026-01-10", 30)],
            read_at="2026-02-15",
            expired=[(0, -70, 50)],
            balance=50,
        ),
        id="a-partly-spent-lot-expires-only-its-remainder",
    ),
    pytest.param(
        ExpiryCase(
            lots=[(100, "2026-01-31")],
            spends=[],
            read_at="2026-02-01",
            expired=[(0, -100, 0)],
            balance=0,
        ),
        id="an-untouched-lot-expires-whole",
    ),
    pytest.param(
        ExpiryCase(
            lots=[(100, "2026-03-31"), (100, "2026-01-31")],
            spends=[("2026-01-10", 120)],
            read_at="2026-04-15",
            expired=[(0, -80, 0)],
            balance=0,
        ),
        id="the-soonest-expiring-lot-is-spent-first",
    ),
    pytest.param(
        ExpiryCase(
            lots=[(50, None), (100, "2026-01-31")],
            spends=[("2026-01-10", 120)],
            read_at="2026-03-01",
            expired=[],
            balance=30,
        ),
        id="a-never-expiring-lot-is-spent-last",
    ),
    pytest.param(
        ExpiryCase(
            lots=[(60, "2026-01-31"), (60, "2026-01-31")],
            spends=[("2026-01-10", 80)],
            read_at="2026-02-15",
            expired=[(1, -40, 0)],
            balance=0,
        ),
        id="of-two-lots-expiring-together-the-older-is-spent-first",
    ),
    pytest.param(
        ExpiryCase(
            lots=[(100, "2026-02-28"), (50, "2026-01-31"), (20, None)],
            spends=[("2026-01-10", 30)],
            read_at="2026-03-15",
            expired=[(1, -20, 120), (0, -100, 20)],
            balance=20,
        ),
        id="each-lot-expires-as-its-own-transaction-in-time-order",
    ),
    pytest.param(
        ExpiryCase(
            lots=[(100, "2026-01-31"), (100, "2026-02-28")],
            spends=[("2026-01-10", 50), ("2026-02-05", 80)],
            read_at="2026-03-15",
            expired=[(0, -50, 100), (1, -20, 0)],
            balance=0,
        ),
        id="spends-between-expiries-draw-from-what-is-left",
    ),
]


@pytest.mark.parametrize("apply_due", ["on-read", "by-sweep"])
@pytest.mark.parametrize("case", EXPIRY_CASES)
def test_lots_are_spent_and_expire_as_the_table_says(
    api: Api, clock: FakeClock, case: ExpiryCase, apply_due: str
) -> None:
    api.member("m")
    award_ids = [
        award(api, "m", points, expires=expires)["transaction_id"] for points, expires in case.lots
    ]
    for when, points in case.spends:
        move_to(clock, when)
        deduct(api, "m", points)
    move_to(clock, case.read_at)
    if apply_due == "by-sweep":
        sweep(api.store, clock)
        assert stored_balance(api.store, "m") == case.balance
        assert verify(api.store) == []

    def lot_named_by(row: dict[str, Any]) -> int:
        """The one award whose id an expire row's reason names."""
        named = [i for i, award_id in enumerate(award_ids) if award_id in row["reason"]]
        assert len(named) == 1, row["reason"]
        return named[0]

    rows = list(reversed(api.history("m", type="expire")))
    assert [(lot_named_by(r), r["points"], r["balance_after"]) for r in rows] == case.expired
    for (lot, _, _), row in zip(case.expired, rows, strict=True):
        expires = case.lots[lot][1]
        assert expires is not None
        assert row["created_at"] == stamp(expires), "an expiry takes effect when the lot expires"
    balance = api.balance("m")
    assert balance["balance"] == case.balance
    assert balance["lifetime_expired"] == -sum(points for _, points, _ in case.expired)
    assert counters_add_up(balance)
    assert sum(lot_remainders(api.store, "m")) == case.balance
    assert_ledger_order(full_history(api, "m"), case.balance)


def test_points_can_be_spent_until_the_moment_they_expire(api: Api, clock: FakeClock) -> None:
    api.member("m")
    award(api, "m", 100, expires="2026-01-31")
    move_to(clock, at("2026-01-31") - timedelta(seconds=1))
    assert api.balance("m")["balance"] == 100
    assert deduct(api, "m", 100)["new_balance"] == 0


def test_a_deduct_after_an_expiry_sees_only_what_is_left(api: Api, clock: FakeClock) -> None:
    api.member("m")
    award(api, "m", 100, expires="2026-01-31")
    award(api, "m", 50)
    move_to(clock, "2026-02-10")
    response = api.deduct("m", 60)
    assert error_code(response) == (422, "insufficient_points")
    assert response.json()["error"]["details"][0]["available"] == 50
    assert deduct(api, "m", 50)["new_balance"] == 0
    assert [r["type"] for r in api.history("m")] == ["deduct", "expire", "award", "award"]


def test_a_deduct_draws_on_as_many_lots_as_it_needs(api: Api) -> None:
    api.member("m")
    for day in range(40):  # more lots than one read brings
        award(api, "m", 1, expires=(at("2026-03-01") - timedelta(days=day)).isoformat())
    award(api, "m", 10)
    assert deduct(api, "m", 45)["new_balance"] == 5
    assert lot_remainders(api.store, "m") == [5]  # the lots expiring soonest went first


def test_expiring_twice_expires_nothing_twice(api: Api, clock: FakeClock) -> None:
    api.member("m")
    award(api, "m", 100, expires="2026-01-31")
    award(api, "m", 40, expires="2026-02-10")
    deduct(api, "m", 30)
    move_to(clock, "2026-02-15")
    sweep(api.store, clock)
    sweep(api.store, clock)
    assert stored_balance(api.store, "m") == 0
    assert verify(api.store) == []
    api.balance("m")
    sweep(api.store, clock)
    move_to(clock, "2026-03-15")
    sweep(api.store, clock)
    assert [r["points"] for r in api.history("m", type="expire")] == [-40, -70]
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_expired"]) == (0, 110)


def test_two_sweeps_at_once_expire_nothing_twice(
    api: Api, clock: FakeClock, database_url: str
) -> None:
    for member in ("a", "b", "c"):
        api.member(member)
        award(api, member, 100, expires="2026-01-31")
        award(api, member, 10, available_at=stamp("2026-01-20"))
    move_to(clock, "2026-02-01")
    stores = [open_store(database_url) for _ in range(2)]
    start = threading.Barrier(len(stores))
    failures: list[BaseException] = []

    def run(store: Any) -> None:
        try:
            start.wait(timeout=10)
            sweep(store, clock)
        except BaseException as error:  # reported below, on the test's own thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for store in stores:
        store.close()
    assert failures == []
    assert verify(api.store) == []
    for member in ("a", "b", "c"):
        assert stored_balance(api.store, member) == 10
        assert [r["points"] for r in api.history(member, type="expire")] == [-100]
        balance = api.balance(member)
        assert (balance["balance"], balance["lifetime_expired"], balance["lifetime_earned"]) == (
            10,
            100,
            110,
        )


def test_two_tally_sweep_processes_at_once_expire_each_lot_once(
    api: Api, clock: FakeClock, database_url: str
) -> None:
    # `tally sweep` runs on the real clock: set the scene in the recent past.
    real_now = datetime.now(UTC).replace(microsecond=0)
    clock.now = real_now - timedelta(days=30)
    expires = real_now - timedelta(days=10)
    api.member("m")
    award(api, "m", 100, expires=stamp(expires))
    award(api, "m", 50)
    deduct(api, "m", 30)
    processes = [
        subprocess.Popen(
            [*tally_command(), "sweep", "--database", database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()
    assert stored_balance(api.store, "m") == 50
    assert verify(api.store) == []
    move_to(clock, real_now)
    rows = api.history("m", type="expire")
    assert [(r["points"], r["balance_after"], r["created_at"]) for r in rows] == [
        (-70, 50, stamp(expires))
    ]
    assert api.balance("m")["lifetime_expired"] == 70


def test_a_sweep_posts_and_expires_for_members_nobody_reads(api: Api, clock: FakeClock) -> None:
    api.member("reader")
    api.member("sleeper")
    award(api, "sleeper", 100, expires="2026-01-31")
    award(api, "sleeper", 70, available_at=stamp("2026-01-20"))
    award(api, "reader", 5)
    move_to(clock, "2026-02-01")
    report = sweep(api.store, clock)
    assert report.members == 1
    assert stored_balance(api.store, "sleeper") == 70
    assert lot_remainders(api.store, "sleeper") == [70]
    assert sweep(api.store, clock).members == 0
    assert verify(api.store) == []
    balance = api.balance("sleeper")
    assert (balance["balance"], balance["pending"], balance["lifetime_expired"]) == (70, 0, 100)


def test_every_write_answers_with_what_was_due_already_applied(api: Api, clock: FakeClock) -> None:
    for member in ("award", "bulk", "deduct"):
        api.member(member)
        award(api, member, 100, expires="2026-01-31")
        award(api, member, 20)
        award(api, member, 5, available_at=stamp("2026-01-20"))
    move_to(clock, "2026-02-10")
    assert award(api, "award", 1)["new_balance"] == 26
    bulk = api.post(
        "/v1/points/award/bulk", {"awards": [{"member_id": "bulk", "points": 1, "reason": "x"}]}
    )
    assert bulk.json()["data"]["transactions"][0]["new_balance"] == 26
    assert deduct(api, "deduct", 1)["new_balance"] == 24
    for member in ("award", "bulk", "deduct"):
        assert_ledger_order(full_history(api, member), api.balance(member)["balance"])


# next_expiration


def test_next_expiration_is_null_when_nothing_will_expire(api: Api) -> None:
    api.member("m")
    assert api.balance("m")["next_expiration"] is None
    award(api, "m", 100)
    assert api.balance("m")["next_expiration"] is None


def test_next_expiration_shows_the_soonest_lot_remainder_and_when(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    award(api, "m", 100, expires="2026-02-28")
    award(api, "m", 40, expires="2026-01-31")
    award(api, "m", 50)
    soonest = {"points": 40, "expires_at": "2026-01-31T00:00:00Z"}
    assert api.balance("m")["next_expiration"] == soonest
    deduct(api, "m", 30)
    assert api.balance("m")["next_expiration"] == {**soonest, "points": 10}
    deduct(api, "m", 10)
    later = {"points": 100, "expires_at": "2026-02-28T00:00:00Z"}
    assert api.balance("m")["next_expiration"] == later
    move_to(clock, "2026-03-01")
    assert api.balance("m")["next_expiration"] is None


def test_next_expiration_moves_on_once_a_lot_has_expired(api: Api, clock: FakeClock) -> None:
    api.member("m")
    award(api, "m", 40, expires="2026-01-31")
    award(api, "m", 100, expires="2026-02-28")
    move_to(clock, "2026-02-01")
    assert api.balance("m")["next_expiration"] == {
        "points": 100,
        "expires_at": "2026-02-28T00:00:00Z",
    }


def test_next_expiration_adds_up_lots_that_expire_at_the_same_moment(api: Api) -> None:
    api.member("m")
    award(api, "m", 100, expires="2026-01-31")
    award(api, "m", 40, expires="2026-01-31")
    award(api, "m", 7, expires="2026-02-01")
    assert api.balance("m")["next_expiration"] == {
        "points": 140,
        "expires_at": "2026-01-31T00:00:00Z",
    }


def test_a_pending_award_is_not_in_next_expiration_until_it_posts(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    award(api, "m", 100, available_at=stamp("2026-01-05"), expires="2026-01-31")
    assert api.balance("m")["next_expiration"] is None
    move_to(clock, "2026-01-06")
    assert api.balance("m")["next_expiration"] == {
        "points": 100,
        "expires_at": "2026-01-31T00:00:00Z",
    }


# The program's expiry policy


def program(api: Api, **kwargs: Any) -> dict[str, Any]:
    response = api.get("/v1/program", **kwargs)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def set_policy(api: Api, days: int | None) -> dict[str, Any]:
    response = api.patch("/v1/program", {"points_expire_after_days": days})
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def test_a_program_starts_with_points_that_never_expire(api: Api) -> None:
    settings = program(api)
    assert settings["name"] == "acme"
    assert settings["points_expire_after_days"] is None


def test_the_expiry_policy_is_set_shown_and_cleared(api: Api) -> None:
    assert set_policy(api, 30)["points_expire_after_days"] == 30
    assert program(api)["points_expire_after_days"] == 30
    assert set_policy(api, None)["points_expire_after_days"] is None
    assert program(api)["points_expire_after_days"] is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"points_expire_after_days": 0}, "validation_error"),
        ({"points_expire_after_days": -1}, "validation_error"),
        ({"points_expire_after_days": 1.5}, "validation_error"),
        ({"points_expire_after_days": "30"}, "validation_error"),
        ({"points_expire_after_days": True}, "validation_error"),
        ({"points_expire_after_days": 10**9}, "validation_error"),
        ({"points_expire_after_day": 30}, "validation_error"),
        ({"points_expire_after_days": 30, "name": "renamed"}, "validation_error"),
        ([30], "invalid_json"),
    ],
)
def test_a_bad_policy_change_is_refused_and_changes_nothing(
    api: Api, body: object, expected: str
) -> None:
    set_policy(api, 90)
    response = api.patch("/v1/program", body)
    assert response.status_code == (400 if expected == "invalid_json" else 422), response.text
    assert response.json()["error"]["code"] == expected
    assert program(api)["points_expire_after_days"] == 90


def test_a_read_key_may_see_the_policy_but_not_change_it(api: Api) -> None:
    reader = api.key_for("acme", Scope.READ)
    assert program(api, key=reader)["name"] == "acme"
    response = api.patch("/v1/program", {"points_expire_after_days": 30}, key=reader)
    assert error_code(response) == (403, "forbidden")
    assert program(api)["points_expire_after_days"] is None


def test_the_policy_applies_to_new_awards_only(api: Api, clock: FakeClock) -> None:
    api.member("m")
    before = award(api, "m", 100)
    set_policy(api, 30)
    move_to(clock, "2026-01-05T12:00")
    after = award(api, "m", 40)
    assert before["expires_at"] is None
    assert after["expires_at"] == "2026-02-04T12:00:00Z"
    assert transaction(api, before["transaction_id"])["expires_at"] is None
    assert api.balance("m")["next_expiration"] == {
        "points": 40,
        "expires_at": "2026-02-04T12:00:00Z",
    }
    move_to(clock, "2026-02-05")
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_expired"]) == (100, 40)


def test_an_explicit_expires_at_wins_over_the_policy(api: Api) -> None:
    api.member("m")
    set_policy(api, 30)
    created = award(api, "m", 100, expires="2026-06-30")
    assert created["expires_at"] == "2026-06-30T00:00:00Z"


def test_under_a_policy_a_pending_award_expires_that_long_after_it_becomes_available(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    set_policy(api, 10)
    created = award(api, "m", 100, available_at=stamp("2026-01-20"))
    assert created["expires_at"] == "2026-01-30T00:00:00Z"
    move_to(clock, "2026-01-25")
    assert api.balance("m")["balance"] == 100
    move_to(clock, "2026-01-30")
    assert api.balance("m")["balance"] == 0


def test_clearing_the_policy_leaves_existing_lots_their_expiry(api: Api, clock: FakeClock) -> None:
    api.member("m")
    set_policy(api, 10)
    award(api, "m", 100)
    set_policy(api, None)
    later = award(api, "m", 40)
    assert later["expires_at"] is None
    move_to(clock, "2026-01-12")
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_expired"]) == (40, 100)


def test_the_policy_belongs_to_one_program(api: Api, clock: FakeClock) -> None:
    set_policy(api, 10)
    other = api.key_for("other")
    assert program(api, key=other)["points_expire_after_days"] is None
    api.post("/v1/members", {"member_id": "m"}, key=other)
    body = {"member_id": "m", "points": 100, "reason": "other program"}
    response = api.post("/v1/points/award", body, key=other)
    assert response.json()["data"]["expires_at"] is None


@pytest.mark.parametrize(
    ("available", "expires"),
    [
        ("2026-01-10", "2026-01-10"),
        ("2026-01-10", "2026-01-09"),
        (None, "2026-01-01T12:00"),
        (None, "2025-12-31"),
        ("2025-12-01", "2025-12-31"),
    ],
    ids=["equal", "before", "now-for-points-available-now", "in-the-past", "before-now"],
)
def test_an_expiry_not_after_availability_is_refused(
    api: Api, available: str | None, expires: str
) -> None:
    api.member("m")
    body = {"member_id": "m", "points": 10, "reason": "x", "expires_at": stamp(expires)}
    if available is not None:
        body["available_at"] = stamp(available)
    response = api.post("/v1/points/award", body)
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == "expires_at"
    balance = api.balance("m")
    assert (balance["balance"], balance["pending"]) == (0, 0)
    assert api.history("m") == []


def test_a_policy_expiry_past_the_end_of_the_calendar_is_not_a_server_error(api: Api) -> None:
    api.member("m")
    set_policy(api, 365)
    body = {"member_id": "m", "points": 10, "reason": "x", "available_at": "9999-06-01T00:00:00Z"}
    response = api.post("/v1/points/award", body)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert response.json()["error"]["code"] == "validation_error"
    bulk = api.post(
        "/v1/points/award/bulk",
        {"awards": [{"member_id": "m", "points": 5, "reason": "fine"}, body]},
    )
    assert bulk.status_code == 200, bulk.text
    assert bulk.json()["data"]["transactions"][0]["index"] == 0
    assert api.balance("m")["balance"] == 5


# Bulk awards with per-item times


def test_bulk_awards_take_available_at_and_expires_at_per_item(api: Api, clock: FakeClock) -> None:
    api.member("a")
    api.member("b")
    items = [
        {"member_id": "a", "points": 100, "reason": "now", "expires_at": stamp("2026-01-31")},
        {"member_id": "a", "points": 50, "reason": "later", "available_at": stamp("2026-01-10")},
        {
            "member_id": "b",
            "points": 70,
            "reason": "later, then gone",
            "available_at": stamp("2026-01-10"),
            "expires_at": stamp("2026-02-10"),
        },
        {
            "member_id": "b",
            "points": 5,
            "reason": "impossible",
            "available_at": stamp("2026-01-10"),
            "expires_at": stamp("2026-01-09"),
        },
    ]
    response = api.post("/v1/points/award/bulk", {"awards": items})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["processed"], data["failed"]) == (3, 1)
    assert [(t["index"], t["member_id"], t["new_balance"]) for t in data["transactions"]] == [
        (0, "a", 100),
        (1, "a", 100),
        (2, "b", 0),
    ]
    assert [(e["index"], e["member_id"], e["error"]["code"]) for e in data["errors"]] == [
        (3, "b", "validation_error")
    ]
    made = {t["index"]: transaction(api, t["transaction_id"]) for t in data["transactions"]}
    assert [
        (made[i]["status"], made[i]["available_at"], made[i]["expires_at"]) for i in range(3)
    ] == [
        ("posted", None, "2026-01-31T00:00:00Z"),
        ("pending", "2026-01-10T00:00:00Z", None),
        ("pending", "2026-01-10T00:00:00Z", "2026-02-10T00:00:00Z"),
    ]
    assert (api.balance("a")["pending"], api.balance("b")["pending"]) == (50, 70)
    move_to(clock, "2026-01-15")
    assert (api.balance("a")["balance"], api.balance("b")["balance"]) == (150, 70)
    move_to(clock, "2026-02-15")
    a, b = api.balance("a"), api.balance("b")
    assert (a["balance"], a["lifetime_expired"], b["balance"], b["lifetime_expired"]) == (
        50,
        100,
        0,
        70,
    )


def test_bulk_awards_without_expires_at_follow_the_policy(api: Api) -> None:
    api.member("a")
    set_policy(api, 30)
    items = [
        {"member_id": "a", "points": 10, "reason": "now"},
        {"member_id": "a", "points": 10, "reason": "later", "available_at": stamp("2026-01-11")},
    ]
    data = api.post("/v1/points/award/bulk", {"awards": items}).json()["data"]
    expiries = [transaction(api, t["transaction_id"])["expires_at"] for t in data["transactions"]]
    assert expiries == ["2026-01-31T12:00:00Z", "2026-02-10T00:00:00Z"]
