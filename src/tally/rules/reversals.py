"""What a reversal of an award or a deduct does (api.md section 9), and how a debt is paid back.

A reversal of an award takes points back as a negative `reversal` entry: first from the award's
own lot; beyond what is left of it only with `allow_negative`, then from the member's other lots
in spend order, and what they cannot cover is a debt (a negative balance). A reversal of a deduct
gives points back as a positive `reversal` entry and a new lot under the program's current
policy. Either way no more than the original moved, counting earlier reversals.

A debt is the part of a reversal no lot covered. Every later credit (an award, a maturity, a
refund, a transfer in, a deduct's reversal) pays it first: its new lot is drawn on by the oldest
reversal still owed, so each repaid point is traced like any spend. Pure functions of values;
`tally.service.reversals` and `tally.service.accounts` write what they return.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from tally.commands import ReverseCommand
from tally.domain import Account, Debt, Draw, Entry, EntryStatus, EntryType, Lot, Member
from tally.errors import Detail, InsufficientPoints, NotReversible, invalid
from tally.rules.lots import default_expiry, plan_draws
from tally.rules.points import lot_of, new_entry

REVERSIBLE = (EntryType.AWARD, EntryType.DEDUCT)


@dataclass(frozen=True, slots=True)
class Reversal:
    """A planned reversal: its entry, the account after it, the original as it reads after it
    (`points_reversed` grown), the draws an award's reversal makes on lots and what those lots
    have left, and the new lot a deduct's reversal makes."""

    entry: Entry
    account: Account
    original: Entry
    draws: list[Draw]
    remaining: dict[str, int]
    lot: Lot | None


@dataclass(frozen=True, slots=True)
class Repayment:
    """`draw.points` of a new lot paid back what the reversal `reversal_id` was owed."""

    reversal_id: str
    draw: Draw


@dataclass(frozen=True, slots=True)
class Settled:
    """A new lot after it paid what it could of the debts, and the debts still owed."""

    lot: Lot
    repayments: list[Repayment]
    debts: list[Debt]


def reversible_points(original: Entry) -> int:
    """How many of the original's points no reversal has yet taken (or given) back."""
    return abs(original.points) - original.points_reversed


def check_reversible(original: Entry) -> None:
    """Only a posted award or deduct with points not yet reversed can be reversed."""
    if original.type not in REVERSIBLE:
        hint = (
            " A redemption is undone by cancelling it (POST /v1/redemptions/{id}/cancel)."
            if original.type is EntryType.REDEEM
            else ""
        )
        raise NotReversible(
            f"Transaction {original.id} is a {original.type.value}; only awards and deducts "
            f"can be reversed.{hint}"
        )
    if original.status is not EntryStatus.POSTED:
        raise NotReversible(
            f"Transaction {original.id} is a {original.status.value} award; only posted awards "
            "can be reversed (a pending one can be cancelled)."
        )
    if reversible_points(original) == 0:
        raise NotReversible(f"Transaction {original.id} has already been reversed in full.")


def points_to_reverse(original: Entry, cmd: ReverseCommand) -> int:
    """The points a reversal takes: those asked for, or all not yet reversed; never more."""
    check_reversible(original)
    left = reversible_points(original)
    if cmd.points is None:
        return left
    if cmd.points > left:
        reversed_ = original.points_reversed
        earlier = f" ({reversed_} of them already reversed)" if reversed_ else ""
        raise invalid(
            "points",
            f"Transaction {original.id} moved {abs(original.points)} points{earlier}; "
            f"at most {left} can still be reversed, not {cmd.points}.",
        )
    return cmd.points


def plan_reversal(
    member: Member,
    original: Entry,
    cmd: ReverseCommand,
    *,
    own: Lot | None,
    others: list[Lot],
    expire_after_days: int | None,
    now: datetime,
    created_by: str,
) -> Reversal:
    """Reverse `original` (the member's, read under its lock), as the key `created_by`. For an
    award, `own` is its lot and `others` the member's other open lots covering the rest (read
    only with `allow_negative`). Raises before anything is planned if the reversal breaks a
    rule."""
    points = points_to_reverse(original, cmd)
    reversed_original = replace(original, points_reversed=original.points_reversed + points)
    if original.type is EntryType.DEDUCT:
        expires_at = default_expiry(effective_at=now, expire_after_days=expire_after_days)
        account = member.account.reverse(EntryType.DEDUCT, points).counted()
        entry = _entry(
            member, account, original, points, cmd, now=now, expires_at=expires_at, by=created_by
        )
        return Reversal(entry, account, reversed_original, [], {}, lot_of(entry))
    unspent = own.remaining if own is not None else 0
    if points > unspent and not cmd.allow_negative:
        message = (
            f"Only {unspent} of the {original.points} points of {original.id} are left unspent; "
            f"reversing {points} needs allow_negative: true, which takes the rest from "
            f"member {member.member_id}'s balance, below zero if need be."
        )
        raise InsufficientPoints(
            message,
            details=[Detail(message, "points", {"available": unspent, "requested": points})],
        )
    draws = [Draw(own.entry_id, min(points, unspent))] if own is not None and unspent else []
    rest = points - min(points, unspent)
    if rest:
        elsewhere = [lot for lot in others if own is None or lot.entry_id != own.entry_id]
        held = sum(lot.remaining for lot in elsewhere)
        draws += plan_draws(elsewhere, min(rest, held))  # what they cannot cover is a debt
    remaining = {lot.entry_id: lot.remaining for lot in [*([own] if own else []), *others]}
    left = {draw.lot_id: remaining[draw.lot_id] - draw.points for draw in draws}
    account = member.account.reverse(EntryType.AWARD, -points).counted()
    entry = _entry(member, account, original, -points, cmd, now=now, expires_at=None, by=created_by)
    return Reversal(entry, account, reversed_original, draws, left, None)


def _entry(
    member: Member,
    account: Account,
    original: Entry,
    points: int,
    cmd: ReverseCommand,
    *,
    now: datetime,
    expires_at: datetime | None,
    by: str,
) -> Entry:
    entry = new_entry(
        member,
        account,
        EntryType.REVERSAL,
        points,
        reason=cmd.reason,
        now=now,
        reference=cmd.reference,
        metadata=cmd.metadata,
        expires_at=expires_at,
        created_by=by,
    )
    return replace(entry, reverses=original.id)


def settle(lot: Lot, debts: list[Debt]) -> Settled:
    """Pay `debts` (oldest first) from the new `lot`, as far as it goes."""
    left = lot.remaining
    repayments: list[Repayment] = []
    still: list[Debt] = []
    for debt in debts:
        paid = min(left, debt.owed)
        if paid:
            repayments.append(Repayment(debt.reversal_id, Draw(lot.entry_id, paid)))
            left -= paid
        if debt.owed > paid:
            still.append(Debt(debt.reversal_id, debt.owed - paid))
    return Settled(replace(lot, remaining=left), repayments, still)
