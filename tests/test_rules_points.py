"""The rules of `tally.rules.points`: what an award, a bulk request, a spend, a refund, a
cancellation, a maturity and an expiry do to a member, as pure functions of values.

Members start from an account given as a table row `(balance, pending, last_seq)`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tally.commands import AwardCommand, BulkCommand, BulkItemError
from tally.domain import MAX_BALANCE, Account, Draw, EntryStatus, EntryType, Lot, Member, Profile
from tally.errors import (
    InsufficientPoints,
    MemberNotFound,
    NotCancellable,
    ValidationFailed,
    invalid,
)
from tally.rules import points as rules
from tally.rules.lots import Expiry, Maturity, PendingAward
from tests.ledger_support import at

NOW = at("2026-03-01T12:00")
BY = "key_test"  # the key every planned row is made by


def member(
    balance: int = 0,
    pending: int = 0,
    last_seq: int = 0,
    member_id: str = "m",
    *,
    spent: int = 0,
) -> Member:
    """A member holding `balance` after earning `balance + spent` (and spending `spent`)."""
    account = Account(
        balance=balance,
        pending=pending,
        lifetime_earned=balance + spent,
        lifetime_deducted=spent,
        last_seq=last_seq,
    )
    return Member(pk=7, program_id=1, profile=Profile(member_id), account=account, created_at=NOW)


def award(
    points: int = 100, *, available_at: datetime | None = None, expires_at: datetime | None = None
) -> AwardCommand:
    return AwardCommand("m", points, "test", available_at=available_at, expires_at=expires_at)


# plan_award

AWARDS = [
    # (available_at, expires_at, policy days) -> (status, balance, pending, expires_at)
    (None, None, None, "posted", 100, 0, None),
    (None, None, 30, "posted", 100, 0, NOW + timedelta(days=30)),
    (None, at("2026-06-01"), 30, "posted", 100, 0, at("2026-06-01")),
    (at("2026-04-01"), None, None, "pending", 0, 100, None),
    (at("2026-04-01"), None, 30, "pending", 0, 100, at("2026-05-01")),
    (at("2026-03-01"), None, None, "posted", 100, 0, None),  # available already: posts now
]


@pytest.mark.parametrize(
    ("available_at", "expires_at", "days", "status", "balance", "pending", "expiry"), AWARDS
)
def test_an_award_posts_now_or_waits_and_expires_by_its_date_or_the_policy(
    available_at: datetime | None,
    expires_at: datetime | None,
    days: int | None,
    status: str,
    balance: int,
    pending: int,
    expiry: datetime | None,
) -> None:
    posting = rules.plan_award(
        member(),
        award(available_at=available_at, expires_at=expires_at),
        expire_after_days=days,
        now=NOW,
        created_by=BY,
    )
    assert posting.entry.status == status
    assert (posting.account.balance, posting.account.pending) == (balance, pending)
    assert posting.entry.expires_at == expiry
    assert (posting.entry.seq, posting.account.last_seq, posting.account.entry_count) == (1, 1, 1)
    assert posting.entry.balance_after == (100 if status == "posted" else None)


LIFETIME_LIMITS = [
    # (balance, pending, spent, points, pending award?) -> allowed
    (0, 0, MAX_BALANCE, 1, False, False),  # nothing left, but lifetime_earned is full
    (10, 0, MAX_BALANCE - 20, 10, False, True),  # lifetime_earned reaches the limit exactly
    (10, 0, MAX_BALANCE - 20, 11, False, False),
    (10, 5, MAX_BALANCE - 20, 5, False, True),  # pending points count: they will be earned
    (10, 5, MAX_BALANCE - 20, 6, False, False),
    (10, 0, MAX_BALANCE - 20, 11, True, False),  # a pending award is checked when made
    (0, 0, 0, 1_000_000_000, False, True),
]


@pytest.mark.parametrize(
    ("balance", "pending", "spent", "points", "later", "allowed"), LIFETIME_LIMITS
)
def test_an_award_never_takes_lifetime_earned_past_64_bits(
    balance: int, pending: int, spent: int, points: int, later: bool, allowed: bool
) -> None:
    start = member(balance=balance, pending=pending, spent=spent)
    command = award(points, available_at=at("2026-04-01") if later else None)
    if allowed:
        posting = rules.plan_award(start, command, expire_after_days=None, now=NOW, created_by=BY)
        earned = posting.account.lifetime_earned + posting.account.pending
        assert earned == balance + spent + pending + points <= MAX_BALANCE
        return
    with pytest.raises(ValidationFailed) as refused:
        rules.plan_award(start, command, expire_after_days=None, now=NOW, created_by=BY)
    assert refused.value.details[0].field == "points"


@pytest.mark.parametrize(
    ("command", "days", "start", "field"),
    [
        (award(expires_at=NOW), None, member(), "expires_at"),
        (
            award(available_at=at("2026-04-01"), expires_at=at("2026-04-01")),
            None,
            member(),
            "expires_at",
        ),
        (award(available_at=datetime.max.replace(tzinfo=NOW.tzinfo)), 30, member(), "available_at"),
        (award(points=1), None, member(balance=MAX_BALANCE), "points"),
        (award(points=1), None, member(balance=MAX_BALANCE - 1, pending=1), "points"),
    ],
)
def test_an_award_that_cannot_be_is_refused_naming_the_field(
    command: AwardCommand, days: int | None, start: Member, field: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        rules.plan_award(start, command, expire_after_days=days, now=NOW, created_by=BY)
    assert refused.value.details[0].field == field


# plan_bulk


def test_bulk_items_to_one_member_build_on_each_other_in_request_order() -> None:
    cmd = BulkCommand([award(10), award(20), award(30)])
    outcome = rules.plan_bulk(
        cmd, {"m": member(balance=5)}, expire_after_days=None, now=NOW, created_by=BY
    )
    assert [(i, p.entry.seq, p.balance) for i, p in outcome.postings] == [
        (0, 1, 15),
        (1, 2, 35),
        (2, 3, 65),
    ]
    assert outcome.failures == []


def test_bulk_items_that_fail_are_reported_by_index_and_the_others_apply() -> None:
    bad = BulkItemError("m", invalid("awards[1].points", "points must be positive"))
    cmd = BulkCommand([award(10), bad, AwardCommand("ghost", 5, "x"), award(1)])
    outcome = rules.plan_bulk(cmd, {"m": member()}, expire_after_days=None, now=NOW, created_by=BY)
    assert [i for i, _ in outcome.postings] == [0, 3]
    assert [(f.index, f.member_id, f.error.code) for f in outcome.failures] == [
        (1, "m", "validation_error"),
        (2, "ghost", MemberNotFound.code),
    ]


def test_an_atomic_bulk_with_any_failure_is_refused_naming_every_failed_item() -> None:
    cmd = BulkCommand([award(10), AwardCommand("ghost", 5, "x")], atomic=True)
    with pytest.raises(ValidationFailed) as refused:
        rules.plan_bulk(cmd, {"m": member()}, expire_after_days=None, now=NOW, created_by=BY)
    assert [(d.field, d.extra["code"]) for d in refused.value.details] == [
        ("awards[1]", "member_not_found")
    ]


# plan_spend

SPENDS = [
    # lots (remaining, expires), spend -> draws (lot index, points), remainders after
    ([(50, "2026-04-01"), (50, None)], 30, [(0, 30)], {"lot0": 20}),
    ([(50, "2026-04-01"), (50, None)], 70, [(0, 50), (1, 20)], {"lot0": 0, "lot1": 30}),
    ([(50, None), (50, "2026-04-01")], 50, [(1, 50)], {"lot1": 0}),
]


@pytest.mark.parametrize(("lots", "points", "draws", "left"), SPENDS)
def test_a_spend_draws_on_lots_in_spend_order_and_leaves_their_remainders(
    lots: list[tuple[int, str | None]],
    points: int,
    draws: list[tuple[int, int]],
    left: dict[str, int],
) -> None:
    open_lots = [
        Lot(f"lot{i}", n, None if d is None else at(d), i + 1) for i, (n, d) in enumerate(lots)
    ]
    start = member(balance=sum(n for n, _ in lots), last_seq=len(lots))
    spend = rules.plan_spend(
        start, open_lots, EntryType.DEDUCT, points, reason="r", now=NOW, created_by=BY
    )
    assert spend.draws == [Draw(f"lot{i}", n) for i, n in draws]
    assert spend.remaining == left
    assert (spend.entry.points, spend.entry.seq) == (-points, len(lots) + 1)
    assert spend.account.balance == start.account.balance - points
    assert spend.account.lifetime_deducted == points


def test_a_spend_past_the_balance_is_refused_with_what_is_there_and_what_was_asked() -> None:
    with pytest.raises(InsufficientPoints) as refused:
        rules.plan_spend(
            member(balance=80), [], EntryType.REDEEM, 100, reason="r", now=NOW, created_by=BY
        )
    assert refused.value.details[0].extra == {"available": 80, "requested": 100}


# refunds, cancellations, maturity, expiry


@pytest.mark.parametrize(("days", "expiry"), [(None, None), (10, NOW + timedelta(days=10))])
def test_a_refund_is_a_new_lot_under_the_current_policy(
    days: int | None, expiry: datetime | None
) -> None:
    posting = rules.plan_refund(
        member(balance=5), 40, expire_after_days=days, reason="r", now=NOW, created_by=BY
    )
    assert (posting.entry.type, posting.entry.points, posting.balance) == (EntryType.REFUND, 40, 45)
    assert rules.lot_of(posting.entry) == Lot(posting.entry.id, 40, expiry, 1)


def test_cancelling_a_pending_award_releases_its_pending_points_only() -> None:
    pending = rules.plan_award(
        member(balance=10),
        award(30, available_at=at("2026-04-01")),
        expire_after_days=None,
        now=NOW,
        created_by=BY,
    )
    after = member(balance=10, pending=30, last_seq=1)
    cancelled = rules.plan_cancel_award(pending.entry, after)
    assert cancelled.entry.status is EntryStatus.CANCELLED
    assert (cancelled.account.balance, cancelled.account.pending) == (10, 0)
    with pytest.raises(NotCancellable):
        rules.plan_cancel_award(cancelled.entry, after)


def test_a_maturing_award_moves_from_pending_to_the_balance_as_a_lot_at_the_next_position() -> None:
    event = Maturity(PendingAward("txn_p", 30, at("2026-02-01"), None), at("2026-02-01"))
    account, lot = rules.plan_maturity(Account(balance=10, pending=30, last_seq=4), event)
    assert (account.balance, account.pending, account.last_seq) == (40, 0, 5)
    assert lot == Lot("txn_p", 30, None, 5)


def test_an_expiring_lot_leaves_as_one_expire_entry_dated_when_it_expired() -> None:
    event = Expiry(Lot("txn_a", 25, at("2026-02-01"), 1), at("2026-02-01"))
    start = member(balance=25, last_seq=1)
    expired = rules.plan_expiry(start, start.account, event)
    assert (expired.entry.type, expired.entry.points, expired.entry.created_at) == (
        EntryType.EXPIRE,
        -25,
        at("2026-02-01"),
    )
    assert expired.draws == [Draw("txn_a", 25)] and expired.remaining == {"txn_a": 0}
    assert (expired.account.balance, expired.account.lifetime_expired) == (0, 25)


def test_a_bulk_items_own_rule_names_its_field_from_the_top_of_the_request() -> None:
    cmd = BulkCommand([award(10), award(5, expires_at=NOW)], atomic=True)
    with pytest.raises(ValidationFailed) as refused:
        rules.plan_bulk(cmd, {"m": member()}, expire_after_days=None, now=NOW, created_by=BY)
    assert [(d.field, d.extra["code"]) for d in refused.value.details] == [
        ("awards[1].expires_at", "validation_error")
    ]
    outcome = rules.plan_bulk(
        BulkCommand([award(5, expires_at=NOW)]),
        {"m": member()},
        expire_after_days=None,
        now=NOW,
        created_by=BY,
    )
    assert outcome.failures[0].error.details[0].field == "awards[0].expires_at"
