"""The rules of `tally.rules.transfers`: which lots a transfer draws on, and the lots the
receiver gets (one per expiry date drawn on, keeping that date), as pure functions of values.

Lots are table rows `(remaining, expires)`; the sender holds exactly their sum.
"""

from __future__ import annotations

import pytest

from tally.commands import TransferCommand
from tally.domain import MAX_BALANCE, Account, EntryStatus, EntryType, Lot, Member, Profile
from tally.errors import InsufficientPoints, ValidationFailed
from tally.rules import transfers as rules
from tests.ledger_support import at

NOW = at("2026-03-01T12:00")
BY = "key_test"  # the key every planned row is made by


def member(member_id: str, balance: int, *, pk: int, last_seq: int = 0, **counters: int) -> Member:
    account = Account(balance=balance, lifetime_earned=balance, last_seq=last_seq, **counters)
    return Member(pk=pk, program_id=1, profile=Profile(member_id), account=account, created_at=NOW)


def lots(*rows: tuple[int, str | None]) -> list[Lot]:
    return [
        Lot(f"lot{i}", remaining, None if expires is None else at(expires), seq=i + 1)
        for i, (remaining, expires) in enumerate(rows)
    ]


def transfer(points: int, *, to: str = "b") -> TransferCommand:
    return TransferCommand("a", to, points, "gift", "ref-1", '{"k":1}')


TRANSFERS = [
    # (sender's lots, points) -> (draws on the sender's lots, receiver's lots (points, expires))
    ([(100, "2026-06-01")], 40, [("lot0", 40)], [(40, "2026-06-01")]),
    (
        [(50, None), (30, "2026-09-01"), (20, "2026-04-01")],
        60,
        [("lot2", 20), ("lot1", 30), ("lot0", 10)],
        [(20, "2026-04-01"), (30, "2026-09-01"), (10, None)],
    ),
    # Two lots of one date become one lot of the receiver.
    (
        [(10, "2026-05-01"), (10, "2026-05-01"), (10, None)],
        25,
        [("lot0", 10), ("lot1", 10), ("lot2", 5)],
        [(20, "2026-05-01"), (5, None)],
    ),
    ([(10, None), (10, None)], 20, [("lot0", 10), ("lot1", 10)], [(20, None)]),
]


@pytest.mark.parametrize(("held", "points", "draws", "received"), TRANSFERS)
def test_a_transfer_draws_in_spend_order_and_the_receiver_keeps_the_expiry_dates(
    held: list[tuple[int, str | None]],
    points: int,
    draws: list[tuple[str, int]],
    received: list[tuple[int, str | None]],
) -> None:
    sender_lots = lots(*held)
    sender = member("a", sum(r for r, _ in held), pk=1, last_seq=len(held))
    receiver = member("b", 7, pk=2, last_seq=3)
    plan = rules.plan_transfer(
        sender, receiver, sender_lots, transfer(points), now=NOW, created_by=BY
    )
    assert [(d.lot_id, d.points) for d in plan.sent.draws] == draws
    assert [(lot.remaining, lot.expires_at) for lot in plan.lots] == [
        (p, None if e is None else at(e)) for p, e in received
    ]
    out, into = plan.sent.entry, plan.received.entry
    assert (out.type, out.points, out.balance_after) == (
        EntryType.TRANSFER_OUT,
        -points,
        sender.account.balance - points,
    )
    assert (into.type, into.points, into.balance_after, into.status) == (
        EntryType.TRANSFER_IN,
        points,
        7 + points,
        EntryStatus.POSTED,
    )
    for entry in (out, into):
        assert (entry.reason, entry.reference, entry.metadata) == ("gift", "ref-1", '{"k":1}')
    assert plan.id.startswith("trf_")
    # The first lot is the entry's own (as an award's); the others name it as their source.
    assert plan.lots[0].entry_id == into.id and plan.lots[0].source is None
    assert all(lot.source == into.id and lot.seq == into.seq for lot in plan.lots[1:])
    assert {lot.made_by for lot in plan.lots} == {into.id}
    assert into.expires_at == plan.lots[0].expires_at  # the soonest of them
    a, b = plan.sent.account, plan.received.account
    assert (a.lifetime_transferred_out, a.lifetime_transferred_in) == (points, 0)
    assert (b.lifetime_transferred_in, b.lifetime_transferred_out) == (points, 0)
    assert (a.last_seq, b.last_seq) == (len(held) + 1, 4)


def test_a_transfer_of_more_than_the_balance_is_refused() -> None:
    sender = member("a", 30, pk=1)
    with pytest.raises(InsufficientPoints) as refused:
        rules.plan_transfer(
            sender, member("b", 0, pk=2), lots((30, None)), transfer(31), now=NOW, created_by=BY
        )
    assert refused.value.details[0].extra == {"available": 30, "requested": 31}


def test_a_member_cannot_transfer_to_itself() -> None:
    with pytest.raises(ValidationFailed) as refused:
        rules.check_parties(transfer(5, to="a"))
    assert refused.value.details[0].field == "to_member_id"


def test_a_transfer_may_not_take_the_receivers_counters_past_64_bits() -> None:
    sender = member("a", 10, pk=1)
    receiver = member("b", 0, pk=2, lifetime_transferred_in=MAX_BALANCE - 5)
    with pytest.raises(ValidationFailed):
        rules.plan_transfer(sender, receiver, lots((10, None)), transfer(6), now=NOW, created_by=BY)
