"""Lot rules (`tally.rules.lots`: spend order, what falls due and when) and `Account` counters.

Lot scenarios are small tables. A lot is `(points, expires)` with `expires` a date or None
(never); lots are numbered by their place in the table, which is also their ledger position.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.domain import Account, Draw, EntryType, Lot
from tally.rules.lots import Expiry, Maturity, PendingAward, default_expiry, due_events, plan_draws
from tests.ledger_support import at

LotRow = tuple[int, str | None]


def lots_of(rows: list[LotRow]) -> list[Lot]:
    """Lots `lot0`, `lot1`, ... in ledger order (seq 1, 2, ...)."""
    return [
        Lot(f"lot{i}", points, None if expires is None else at(expires), seq=i + 1)
        for i, (points, expires) in enumerate(rows)
    ]


def draws_of(rows: list[tuple[int, int]]) -> list[Draw]:
    return [Draw(f"lot{index}", points) for index, points in rows]


# plan_draws

SPENDS = [
    pytest.param(
        [(100, "2026-01-31"), (50, None)], 120, [(0, 100), (1, 20)], id="expiring-before-never"
    ),
    pytest.param(
        [(50, None), (100, "2026-01-31")],
        120,
        [(1, 100), (0, 20)],
        id="never-expiring-is-last-even-when-older",
    ),
    pytest.param(
        [(30, "2026-03-01"), (30, "2026-02-01"), (30, "2026-01-15")],
        70,
        [(2, 30), (1, 30), (0, 10)],
        id="soonest-expiring-first",
    ),
    pytest.param(
        [(40, "2026-01-31"), (40, "2026-01-31")],
        50,
        [(0, 40), (1, 10)],
        id="oldest-first-among-equal-expiries",
    ),
    pytest.param([(10, None), (20, None)], 15, [(0, 10), (1, 5)], id="oldest-first-among-never"),
    pytest.param([(100, None)], 100, [(0, 100)], id="a-whole-lot"),
    pytest.param([(100, "2026-01-31")], 1, [(0, 1)], id="one-point"),
    pytest.param(
        [(0, "2026-01-02"), (10, "2026-01-31")], 5, [(1, 5)], id="an-empty-lot-is-not-drawn"
    ),
    pytest.param(
        [(25, "2026-02-01"), (25, None), (25, "2026-01-01"), (25, "2026-02-01")],
        100,
        [(2, 25), (0, 25), (3, 25), (1, 25)],
        id="every-lot-in-spend-order",
    ),
]


@pytest.mark.parametrize(("lots", "spend", "draws"), SPENDS)
def test_a_spend_draws_from_lots_in_spend_order(
    lots: list[LotRow], spend: int, draws: list[tuple[int, int]]
) -> None:
    assert plan_draws(lots_of(lots), spend) == draws_of(draws)


def test_a_tie_on_expiry_goes_to_the_lowest_ledger_position_whatever_the_list_order() -> None:
    expires = at("2026-01-31")
    newer = Lot("newer", 40, expires, seq=9)
    older = Lot("older", 40, expires, seq=3)
    assert plan_draws([newer, older], 50) == [Draw("older", 40), Draw("newer", 10)]


def test_never_expiring_lots_tie_break_on_ledger_position_too() -> None:
    newer = Lot("newer", 40, None, seq=7)
    older = Lot("older", 40, None, seq=2)
    soon = Lot("soon", 5, at("2099-12-31"), seq=8)
    assert plan_draws([newer, older, soon], 50) == [
        Draw("soon", 5),
        Draw("older", 40),
        Draw("newer", 5),
    ]


def test_a_spend_larger_than_the_lots_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_draws(lots_of([(100, "2026-01-31"), (50, None)]), 151)


def test_a_spend_of_lots_that_were_all_drawn_is_refused() -> None:
    with pytest.raises(ValueError):
        plan_draws(lots_of([(0, None)]), 1)


lot_strategy = st.builds(
    Lot,
    entry_id=st.uuids().map(str),
    remaining=st.integers(0, 1_000),
    expires_at=st.none() | st.integers(0, 20).map(lambda d: at("2026-01-01") + timedelta(days=d)),
    seq=st.integers(1, 10_000),
)


@given(lots=st.lists(lot_strategy, max_size=8, unique_by=lambda lot: lot.seq), data=st.data())
def test_any_affordable_spend_takes_whole_lots_in_order_then_part_of_one(
    lots: list[Lot], data: st.DataObject
) -> None:
    spend = data.draw(st.integers(1, max(1, sum(lot.remaining for lot in lots))))
    if spend > sum(lot.remaining for lot in lots):
        with pytest.raises(ValueError):
            plan_draws(lots, spend)
        return
    draws = plan_draws(lots, spend)
    by_id = {lot.entry_id: lot for lot in lots}
    assert sum(draw.points for draw in draws) == spend
    assert all(0 < draw.points <= by_id[draw.lot_id].remaining for draw in draws)
    # Every lot before the last one drawn is emptied, and drawn in spend order.
    order = [by_id[draw.lot_id].spend_order for draw in draws]
    assert order == sorted(order)
    assert all(draw.points == by_id[draw.lot_id].remaining for draw in draws[:-1])
    untouched = [lot for lot in lots if lot.entry_id not in {d.lot_id for d in draws}]
    assert all(lot.remaining == 0 or lot.spend_order > order[-1] for lot in untouched), (
        "a lot earlier in spend order was skipped"
    )


# due_events

NOW = at("2026-02-01T12:00")


def pending(entry_id: str, points: int, available: str, expires: str | None = None) -> PendingAward:
    return PendingAward(entry_id, points, at(available), None if expires is None else at(expires))


def summary(events: list[Maturity | Expiry]) -> list[tuple[str, str, int, datetime]]:
    """Each event as (kind, entry id, points, when)."""
    return [
        ("mature", e.award.entry_id, e.award.points, e.at)
        if isinstance(e, Maturity)
        else ("expire", e.lot.entry_id, e.lot.remaining, e.at)
        for e in events
    ]


def test_nothing_is_due_before_its_time() -> None:
    events = due_events(
        [pending("p", 10, "2026-02-02")],
        lots_of([(100, "2026-02-03"), (50, None)]),
        now=NOW,
    )
    assert events == []


def test_a_lot_that_never_expires_is_never_due() -> None:
    assert due_events([], lots_of([(100, None)]), now=at("2999-01-01")) == []


def test_maturities_and_expiries_come_in_the_order_they_fell_due() -> None:
    lots = lots_of([(100, "2026-01-20"), (70, "2026-01-05")])
    events = due_events([pending("p", 30, "2026-01-10")], lots, now=NOW)
    assert summary(events) == [
        ("expire", "lot1", 70, at("2026-01-05")),
        ("mature", "p", 30, at("2026-01-10")),
        ("expire", "lot0", 100, at("2026-01-20")),
    ]


def test_at_the_same_instant_a_maturity_comes_before_an_expiry() -> None:
    events = due_events([pending("p", 30, "2026-01-10")], lots_of([(100, "2026-01-10")]), now=NOW)
    assert [kind for kind, *_ in summary(events)] == ["mature", "expire"]


def test_a_matured_award_that_itself_expires_by_now_matures_then_expires_whole() -> None:
    events = due_events([pending("p", 30, "2026-01-10", expires="2026-01-25")], [], now=NOW)
    assert summary(events) == [
        ("mature", "p", 30, at("2026-01-10")),
        ("expire", "p", 30, at("2026-01-25")),
    ]


def test_a_matured_award_that_expires_later_only_matures() -> None:
    events = due_events([pending("p", 30, "2026-01-10", expires="2026-03-01")], [], now=NOW)
    assert summary(events) == [("mature", "p", 30, at("2026-01-10"))]


def test_a_fully_spent_lot_expires_nothing() -> None:
    lots = lots_of([(0, "2026-01-10"), (5, "2026-01-12")])
    assert summary(due_events([], lots, now=NOW)) == [("expire", "lot1", 5, at("2026-01-12"))]


def test_a_partly_spent_lot_expires_only_its_remainder() -> None:
    events = due_events([], [Lot("lot", 30, at("2026-01-10"), seq=1)], now=NOW)
    assert summary(events) == [("expire", "lot", 30, at("2026-01-10"))]


def test_what_falls_due_exactly_now_is_due() -> None:
    now = at("2026-01-10")
    events = due_events([pending("p", 5, "2026-01-10")], lots_of([(1, "2026-01-10")]), now=now)
    assert [kind for kind, *_ in summary(events)] == ["mature", "expire"]


def test_lots_expiring_together_expire_in_ledger_order() -> None:
    expires = at("2026-01-10")
    lots = [Lot("newer", 1, expires, seq=8), Lot("older", 2, expires, seq=4)]
    assert [e.lot.entry_id for e in due_events([], lots, now=NOW) if isinstance(e, Expiry)] == [
        "older",
        "newer",
    ]


def test_awards_maturing_together_keep_the_order_they_were_given_in() -> None:
    awards = [pending("first", 1, "2026-01-10"), pending("second", 2, "2026-01-10")]
    assert [entry for _, entry, *_ in summary(due_events(awards, [], now=NOW))] == [
        "first",
        "second",
    ]


# Account


def test_an_award_raises_balance_and_lifetime_earned() -> None:
    account = Account().post(EntryType.AWARD, 100)
    assert (account.balance, account.lifetime_earned, account.last_seq) == (100, 100, 1)


@pytest.mark.parametrize(
    ("kind", "counter"),
    [
        (EntryType.DEDUCT, "lifetime_deducted"),
        (EntryType.REDEEM, "lifetime_redeemed"),
        (EntryType.EXPIRE, "lifetime_expired"),
    ],
)
def test_a_spend_lowers_balance_and_raises_its_own_counter(kind: EntryType, counter: str) -> None:
    account = Account().post(EntryType.AWARD, 100).post(kind, -30)
    assert account.balance == 70
    assert getattr(account, counter) == 30
    assert account.lifetime_earned == 100
    assert account.last_seq == 2


def test_a_refund_gives_back_balance_and_takes_back_lifetime_redeemed() -> None:
    account = Account().post(EntryType.AWARD, 100).post(EntryType.REDEEM, -60)
    refunded = account.post(EntryType.REFUND, 60)
    assert (refunded.balance, refunded.lifetime_redeemed, refunded.lifetime_earned) == (100, 0, 100)


def test_a_post_that_would_take_the_balance_below_zero_is_refused() -> None:
    with pytest.raises(ValueError):
        Account().post(EntryType.AWARD, 10).post(EntryType.DEDUCT, -11)


def test_a_post_may_take_the_balance_to_exactly_zero() -> None:
    assert Account().post(EntryType.AWARD, 10).post(EntryType.DEDUCT, -10).balance == 0


def test_a_hold_counts_in_pending_only_and_a_release_gives_it_back() -> None:
    held = Account().post(EntryType.AWARD, 5).hold(40)
    assert (held.balance, held.pending, held.lifetime_earned, held.last_seq) == (5, 40, 5, 1)
    released = held.hold(-40)
    assert (released.balance, released.pending) == (5, 0)


def test_numbering_takes_a_ledger_position_and_counting_counts_rows() -> None:
    account = Account().numbered().counted().counted(3)
    assert (account.last_seq, account.entry_count, account.balance) == (1, 4, 0)


def test_account_values_are_never_changed_in_place() -> None:
    start = Account()
    start.post(EntryType.AWARD, 10).hold(5)
    assert start == Account()


STEPS = [
    (EntryType.AWARD, 500),
    (EntryType.DEDUCT, -120),
    (EntryType.REDEEM, -200),
    (EntryType.AWARD, 50),
    (EntryType.EXPIRE, -30),
    (EntryType.REFUND, 200),
    (EntryType.REDEEM, -75),
]


def test_after_any_run_of_posts_balance_is_earned_less_redeemed_deducted_and_expired() -> None:
    account = Account()
    for kind, points in STEPS:
        account = account.post(kind, points)
        assert account.balance == (
            account.lifetime_earned
            - account.lifetime_redeemed
            - account.lifetime_deducted
            - account.lifetime_expired
        )
    assert (
        account.balance,
        account.lifetime_earned,
        account.lifetime_redeemed,
        account.lifetime_deducted,
        account.lifetime_expired,
        account.last_seq,
    ) == (325, 550, 75, 120, 30, len(STEPS))


# default_expiry


def test_without_a_policy_new_lots_never_expire() -> None:
    assert default_expiry(effective_at=NOW, expire_after_days=None) is None


def test_a_policy_expires_new_lots_that_many_days_after_they_take_effect() -> None:
    assert default_expiry(effective_at=NOW, expire_after_days=30) == NOW + timedelta(days=30)
