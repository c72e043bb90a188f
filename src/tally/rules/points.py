"""What each kind of change does to a member: the entry it makes and the account after it.

Awards (one, or a bulk request's many), spends (deducts and redemptions), refunds, the
cancellation of a pending award, and the two things time does (a pending award matures, a lot
expires). Each function takes values and returns the planned change, or raises the error of the
rule it breaks before anything is written. Writing the plan is `tally.service.accounts`' job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from tally import ids
from tally.commands import (
    AwardCommand,
    BulkCommand,
    BulkFailure,
    BulkItemError,
    BulkOutcome,
    Posting,
)
from tally.domain import (
    MAX_BALANCE,
    SYSTEM,
    Account,
    Draw,
    Entry,
    EntryStatus,
    EntryType,
    Lot,
    Member,
)
from tally.errors import (
    Detail,
    InsufficientPoints,
    MemberNotFound,
    NotCancellable,
    TallyError,
    ValidationFailed,
    invalid,
)
from tally.rules.lots import Expiry, Maturity, default_expiry, plan_draws


@dataclass(frozen=True, slots=True)
class Spend:
    """A planned spend (or expiry): its entry, the account after it, the draws it makes on
    lots and what each of those lots has left afterwards."""

    entry: Entry
    account: Account
    draws: list[Draw]
    remaining: dict[str, int]

    @property
    def posting(self) -> Posting:
        return Posting(self.entry, self.account)


def new_entry(
    member: Member,
    account: Account,
    kind: EntryType,
    points: int,
    *,
    reason: str,
    now: datetime,
    created_by: str,
    status: EntryStatus = EntryStatus.POSTED,
    reference: str | None = None,
    metadata: str | None = None,
    available_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> Entry:
    """An entry at the account's newest ledger position (posted ones carry the new balance)."""
    return Entry(
        id=ids.new_id("txn_", now),
        program_id=member.program_id,
        member_pk=member.pk,
        member_id=member.member_id,
        seq=account.last_seq,
        type=kind,
        status=status,
        points=points,
        reason=reason,
        reference=reference,
        metadata=metadata,
        balance_after=account.balance if status is EntryStatus.POSTED else None,
        created_at=now,
        available_at=available_at,
        expires_at=expires_at,
        posted_at=None,
        created_by=created_by,
    )


def lot_of(entry: Entry) -> Lot:
    """The lot a posted award or refund becomes."""
    return Lot(entry.id, entry.points, entry.expires_at, entry.seq)


def plan_award(
    member: Member,
    cmd: AwardCommand,
    *,
    expire_after_days: int | None,
    now: datetime,
    created_by: str,
) -> Posting:
    """The entry and account an award makes: pending until `available_at` if that is later than
    `now`, expiring at `expires_at` or under the program's policy."""
    pending = cmd.available_at is not None and cmd.available_at > now
    effective = cmd.available_at if pending and cmd.available_at else now
    expires_at = cmd.expires_at
    if expires_at is None:
        try:
            expires_at = default_expiry(effective_at=effective, expire_after_days=expire_after_days)
        except OverflowError:
            raise invalid(
                "available_at",
                "available_at is so far ahead that the program's expiry policy would end after "
                "the year 9999.",
            ) from None
    elif expires_at <= effective:
        raise invalid(
            "expires_at",
            "expires_at must be later than available_at, or than now for points available now.",
        )
    account = member.account
    check_lifetime_room(member, cmd.points)
    if pending:
        account = account.hold(cmd.points).numbered().counted()
    else:
        account = account.post(EntryType.AWARD, cmd.points).counted()
    entry = new_entry(
        member,
        account,
        EntryType.AWARD,
        cmd.points,
        reason=cmd.reason,
        now=now,
        created_by=created_by,
        status=EntryStatus.PENDING if pending else EntryStatus.POSTED,
        reference=cmd.reference,
        metadata=cmd.metadata,
        available_at=cmd.available_at,
        expires_at=expires_at,
    )
    return Posting(entry, account)


def check_lifetime_room(member: Member, points: int) -> None:
    """Every counter is a 64-bit integer, and `lifetime_earned + lifetime_transferred_in` is the
    largest sum of them: both only grow, and count pending points too once they post. So an
    award or a transfer in may not take `lifetime_earned + lifetime_transferred_in + pending`
    past 2**63 - 1.

    That bounds every other counter as well: the balance, and each of `lifetime_redeemed`,
    `lifetime_deducted`, `lifetime_expired` and `lifetime_transferred_out`, is at most that sum
    (they are never negative and balance = earned + transferred_in - redeemed - deducted -
    expired - transferred_out), a refund gives back only what was redeemed, and `pending` is
    part of the sum checked here.
    """
    account = member.account
    received = account.lifetime_earned + account.lifetime_transferred_in
    room = MAX_BALANCE - received - account.pending
    if points > room:
        raise invalid(
            "points",
            f"Member {member.member_id} has received {received} points "
            f"({account.pending} more pending); {points} more would pass {MAX_BALANCE}, "
            f"the most a member can ever earn. At most {max(room, 0)} can still be awarded.",
        )


def plan_bulk(
    cmd: BulkCommand,
    members: dict[str, Member],
    *,
    expire_after_days: int | None,
    now: datetime,
    created_by: str,
) -> BulkOutcome:
    """Every item planned in request order, each on top of the earlier ones to the same member.

    An item that cannot be applied becomes a failure and the others still apply; with
    `atomic`, any failure refuses the whole request (`ValidationFailed` naming every item).
    """
    current = dict(members)
    postings: list[tuple[int, Posting]] = []
    failures: list[BulkFailure] = []
    for index, item in enumerate(cmd.items):
        if isinstance(item, BulkItemError):
            failures.append(BulkFailure(index, item.member_id, item.error))
            continue
        member = current.get(item.member_id)
        try:
            if member is None:
                raise MemberNotFound(f"Member {item.member_id} does not exist.")
            posting = plan_award(
                member, item, expire_after_days=expire_after_days, now=now, created_by=created_by
            )
        except TallyError as error:
            failures.append(BulkFailure(index, item.member_id, _of_item(error, index)))
            continue
        current[item.member_id] = replace(member, account=posting.account)
        postings.append((index, posting))
    if cmd.atomic and failures:
        raise bulk_rejected(failures, len(cmd.items))
    return BulkOutcome(postings, failures)


def _of_item(error: TallyError, index: int) -> TallyError:
    """`error` of item `index`, its fields named from the request's top (`awards[3].points`),
    as the items that failed validation name theirs."""
    details = [
        Detail(d.message, None if d.field is None else f"awards[{index}].{d.field}", d.extra)
        for d in error.details
    ]
    return type(error)(error.message, details=details)


def bulk_rejected(failures: list[BulkFailure], total: int) -> ValidationFailed:
    """The error of an atomic bulk request with failed items: one detail per problem, each
    naming its field (`awards[3].points`) or, for a problem with the item as a whole, the item."""
    details = []
    for failure in failures:
        for detail in failure.error.details or [Detail(failure.error.message)]:
            field_name = detail.field or f"awards[{failure.index}]"
            details.append(
                Detail(detail.message, field_name, {**detail.extra, "code": failure.error.code})
            )
    return ValidationFailed(
        f"{len(failures)} of {total} awards failed; with atomic: true none were applied.",
        details=details,
    )


def check_spendable(member: Member, points: int) -> None:
    """A spend never takes the balance below zero; a member in debt can spend nothing."""
    balance = member.account.balance
    if balance < 0:
        message = (
            f"Member {member.member_id} owes {-balance} points (a reversal took back points "
            f"already spent); nothing can be spent until awards have paid that back."
        )
        extra: dict[str, object] = {"available": 0, "requested": points, "debt": -balance}
        raise InsufficientPoints(message, details=[Detail(message, "points", extra)])
    if balance < points:
        message = f"Member {member.member_id} has {balance} points, needs {points}."
        raise InsufficientPoints(
            message,
            details=[Detail(message, "points", {"available": balance, "requested": points})],
        )


def plan_spend(
    member: Member,
    lots: list[Lot],
    kind: EntryType,
    points: int,
    *,
    reason: str,
    now: datetime,
    created_by: str,
    reference: str | None = None,
    metadata: str | None = None,
) -> Spend:
    """Take `points` from `lots` (the member's open lots that cover them) as one entry of
    `kind` (a deduct or a redemption)."""
    check_spendable(member, points)
    draws = plan_draws(lots, points)
    account = member.account.post(kind, -points).counted()
    entry = new_entry(
        member,
        account,
        kind,
        -points,
        reason=reason,
        now=now,
        created_by=created_by,
        reference=reference,
        metadata=metadata,
    )
    remaining = {lot.entry_id: lot.remaining for lot in lots}
    left = {draw.lot_id: remaining[draw.lot_id] - draw.points for draw in draws}
    return Spend(entry, account, draws, left)


def plan_refund(
    member: Member,
    points: int,
    *,
    expire_after_days: int | None,
    reason: str,
    now: datetime,
    created_by: str,
) -> Posting:
    """Give `points` back as a new lot that expires under the program's current policy."""
    expires_at = default_expiry(effective_at=now, expire_after_days=expire_after_days)
    account = member.account.post(EntryType.REFUND, points).counted()
    entry = new_entry(
        member,
        account,
        EntryType.REFUND,
        points,
        reason=reason,
        now=now,
        created_by=created_by,
        expires_at=expires_at,
    )
    return Posting(entry, account)


def plan_cancel_award(entry: Entry, member: Member) -> Posting:
    """Only a pending award can be cancelled: its points leave `pending`, nothing else moves."""
    if entry.status != EntryStatus.PENDING:
        raise NotCancellable(
            f"Transaction {entry.id} is {entry.type.value}, {entry.status.value}; "
            "only a pending award can be cancelled."
        )
    account = member.account.hold(-entry.points)
    return Posting(replace(entry, status=EntryStatus.CANCELLED), account)


def plan_maturity(account: Account, event: Maturity) -> tuple[Account, Lot]:
    """A pending award posts: its points move from `pending` to the balance, as a new lot at
    the account's next ledger position."""
    award = event.award
    account = account.hold(-award.points).post(EntryType.AWARD, award.points)
    return account, Lot(award.entry_id, award.points, award.expires_at, account.last_seq)


def posted(entry: Entry, lot: Lot, *, balance_after: int, at: datetime) -> Entry:
    """The pending award `entry` as it reads once posted as `lot` (see `plan_maturity`)."""
    return replace(
        entry, status=EntryStatus.POSTED, seq=lot.seq, balance_after=balance_after, posted_at=at
    )


def plan_expiry(member: Member, account: Account, event: Expiry) -> Spend:
    """What is left of a lot leaves the balance as one `expire` entry, dated when it expired."""
    lot = event.lot
    account = account.post(EntryType.EXPIRE, -lot.remaining).counted()
    entry = new_entry(
        member,
        account,
        EntryType.EXPIRE,
        -lot.remaining,
        reason=f"Expired: what was left of {lot.made_by}",
        now=event.at,
        created_by=SYSTEM,
    )
    return Spend(entry, account, [Draw(lot.entry_id, lot.remaining)], {lot.entry_id: 0})
