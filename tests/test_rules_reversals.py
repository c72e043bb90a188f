"""The rules of `tally.rules.reversals`: how much a reversal may take, which lots it draws on,
what becomes a debt, and how a new lot pays debts back, as pure functions of values.

Lots are table rows `(remaining, expires)`; `lot0` is the reversed award's own lot, and the
member holds exactly the lots' sum.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tally.commands import ReverseCommand
from tally.domain import (
    Account,
    Debt,
    Draw,
    Entry,
    EntryStatus,
    EntryType,
    Lot,
    Member,
    Profile,
)
from tally.errors import InsufficientPoints, NotReversible, ValidationFailed
from tally.rules import reversals as rules
from tests.ledger_support import at

NOW = at("2026-03-01T12:00")


def member(balance: int, *, earned: int = 0, deducted: int = 0) -> Member:
    account = Account(
        balance=balance,
        lifetime_earned=earned or max(balance, 0) + deducted,
        lifetime_deducted=deducted,
        last_seq=7,
        entry_count=7,
    )
    return Member(pk=1, program_id=1, profile=Profile("m"), account=account, created_at=NOW)


def original(
    kind: EntryType = EntryType.AWARD,
    points: int = 100,
    *,
    status: EntryStatus = EntryStatus.POSTED,
    reversed_: int = 0,
) -> Entry:
    return Entry(
        id="lot0",  # an award's lot has its id
        program_id=1,
        member_pk=1,
        member_id="m",
        seq=1,
        type=kind,
        status=status,
        points=points,
        reason="order 1",
        reference=None,
        metadata=None,
        balance_after=points,
        created_at=at("2026-01-01"),
        available_at=None,
        expires_at=None,
        posted_at=None,
        created_by="key_test",
        points_reversed=reversed_,
    )


def lots(*rows: tuple[int, str | None]) -> list[Lot]:
    return [
        Lot(f"lot{i}", remaining, None if expires is None else at(expires), seq=i + 1)
        for i, (remaining, expires) in enumerate(rows)
    ]


def reverse(points: int | None = None, *, allow_negative: bool = False) -> ReverseCommand:
    return ReverseCommand("returned", points, allow_negative, "RMA-1", '{"k":1}')


AWARD_REVERSALS = [
    # (lots (lot0 the award's), points, allow_negative) -> (draws, balance after)
    ([(100, None)], None, False, [("lot0", 100)], 0),
    ([(100, None), (50, None)], 30, False, [("lot0", 30)], 120),
    # The award's lot first, whatever the spend order says.
    ([(60, None), (50, "2026-04-01")], 60, False, [("lot0", 60)], 50),
    # Beyond its own lot: the other lots in spend order, then a debt.
    (
        [(40, None), (30, None), (20, "2026-04-01")],
        80,
        True,
        [("lot0", 40), ("lot2", 20), ("lot1", 20)],
        10,
    ),
    ([(40, None), (10, None)], 100, True, [("lot0", 40), ("lot1", 10)], -50),
    ([(0, None)], 100, True, [], -100),
]


@pytest.mark.parametrize(("held", "points", "allow", "draws", "balance"), AWARD_REVERSALS)
def test_an_awards_reversal_takes_its_own_lot_first_then_others_then_makes_a_debt(
    held: list[tuple[int, str | None]],
    points: int | None,
    allow: bool,
    draws: list[tuple[str, int]],
    balance: int,
) -> None:
    owned = lots(*held)
    who = member(sum(lot.remaining for lot in owned), earned=200)
    planned = rules.plan_reversal(
        who,
        original(),
        reverse(points, allow_negative=allow),
        own=owned[0],
        others=owned,
        expire_after_days=30,
        now=NOW,
        created_by="key_test",
    )
    taken = points or 100
    assert [(d.lot_id, d.points) for d in planned.draws] == draws
    assert planned.remaining == {d.lot_id: held_of(owned, d) - d.points for d in planned.draws}
    assert planned.account.balance == balance
    assert planned.account.lifetime_earned == 200 - taken
    assert (planned.account.last_seq, planned.account.entry_count) == (8, 8)
    entry = planned.entry
    assert (entry.type, entry.points, entry.reverses, entry.balance_after) == (
        EntryType.REVERSAL,
        -taken,
        "lot0",
        balance,
    )
    assert (entry.reason, entry.reference, entry.metadata, entry.expires_at) == (
        "returned",
        "RMA-1",
        '{"k":1}',
        None,
    )
    assert planned.original.points_reversed == taken
    assert planned.lot is None


def held_of(owned: list[Lot], draw: Draw) -> int:
    return next(lot.remaining for lot in owned if lot.entry_id == draw.lot_id)


def test_a_deducts_reversal_gives_the_points_back_as_a_lot_under_the_current_policy() -> None:
    who = member(20, deducted=50)
    deduct = original(EntryType.DEDUCT, -50, reversed_=10)
    planned = rules.plan_reversal(
        who,
        deduct,
        reverse(),
        own=None,
        others=[],
        expire_after_days=30,
        now=NOW,
        created_by="key_test",
    )
    assert planned.entry.created_by == "key_test"
    assert (planned.entry.points, planned.entry.expires_at) == (40, at("2026-03-31T12:00"))
    assert (planned.account.balance, planned.account.lifetime_deducted) == (60, 10)
    assert planned.lot == Lot(planned.entry.id, 40, at("2026-03-31T12:00"), 8)
    assert (planned.draws, planned.original.points_reversed) == ([], 50)


REFUSALS = [
    # (original, command, lots) -> error, field
    (original(), reverse(30), [(29, None)], InsufficientPoints, "points"),
    (original(), reverse(), [(99, None), (500, None)], InsufficientPoints, "points"),
    (
        original(reversed_=40),
        reverse(61, allow_negative=True),
        [(60, None)],
        ValidationFailed,
        "points",
    ),
    (original(EntryType.DEDUCT, -50), reverse(51), [], ValidationFailed, "points"),
    (original(reversed_=100), reverse(), [(0, None)], NotReversible, None),
    (original(status=EntryStatus.PENDING), reverse(), [], NotReversible, None),
    (original(status=EntryStatus.CANCELLED), reverse(), [], NotReversible, None),
    (original(EntryType.REDEEM, -50), reverse(), [], NotReversible, None),
    (original(EntryType.EXPIRE, -50), reverse(), [], NotReversible, None),
    (original(EntryType.TRANSFER_IN, 50), reverse(), [], NotReversible, None),
    (replace(original(EntryType.REVERSAL, -5), reverses="x"), reverse(), [], NotReversible, None),
]


@pytest.mark.parametrize(("entry", "cmd", "held", "error", "field"), REFUSALS)
def test_a_reversal_that_breaks_a_rule_is_refused_before_anything_is_planned(
    entry: Entry,
    cmd: ReverseCommand,
    held: list[tuple[int, str | None]],
    error: type[Exception],
    field: str | None,
) -> None:
    owned = lots(*held)
    who = member(sum(lot.remaining for lot in owned), earned=500)
    with pytest.raises(error) as raised:
        rules.plan_reversal(
            who,
            entry,
            cmd,
            own=owned[0] if owned else None,
            others=owned,
            expire_after_days=None,
            now=NOW,
            created_by="key_test",
        )
    details = getattr(raised.value, "details", [])
    assert [d.field for d in details] == ([field] if field else [])


SETTLEMENTS = [
    # (new lot's points, debts) -> (lot left, repayments, debts left)
    (100, [], 100, [], []),
    (30, [("r1", 50)], 0, [("r1", 30)], [("r1", 20)]),
    (50, [("r1", 50)], 0, [("r1", 50)], []),
    (80, [("r1", 20), ("r2", 40)], 20, [("r1", 20), ("r2", 40)], []),
    (30, [("r1", 20), ("r2", 40)], 0, [("r1", 20), ("r2", 10)], [("r2", 30)]),
]


@pytest.mark.parametrize(("points", "debts", "left", "repaid", "still"), SETTLEMENTS)
def test_a_new_lot_pays_the_oldest_debt_first_and_keeps_the_rest(
    points: int,
    debts: list[tuple[str, int]],
    left: int,
    repaid: list[tuple[str, int]],
    still: list[tuple[str, int]],
) -> None:
    lot = Lot("new", points, None, seq=9)
    settled = rules.settle(lot, [Debt(r, owed) for r, owed in debts])
    assert settled.lot == replace(lot, remaining=left)
    assert [(r.reversal_id, r.draw) for r in settled.repayments] == [
        (r, Draw("new", paid)) for r, paid in repaid
    ]
    assert settled.debts == [Debt(r, owed) for r, owed in still]


def test_an_account_in_debt_takes_credits_and_refuses_to_fall_further_by_a_spend() -> None:
    spent = Account(balance=10, lifetime_earned=50, lifetime_deducted=40)
    account = spent.reverse(EntryType.AWARD, -30)
    assert (account.balance, account.lifetime_earned) == (-20, 20)
    assert account.post(EntryType.AWARD, 5).balance == -15
    with pytest.raises(ValueError, match="balance would fall"):
        account.post(EntryType.DEDUCT, -1)
    with pytest.raises(ValueError, match="cannot be reversed"):
        account.reverse(EntryType.REDEEM, 5)
