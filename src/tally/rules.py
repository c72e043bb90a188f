"""The rules of one change to one member, applied inside one open transaction.

Every function here takes the `Tx` and the time, and either changes the ledger consistently
(entry, lots, draws and counters together) or raises before changing anything.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from tally import ids
from tally.commands import (
    AwardCommand,
    BulkFailure,
    Clock,
    Listing,
    Posting,
)
from tally.domain import (
    MAX_BALANCE,
    Account,
    Draw,
    Entry,
    EntryStatus,
    EntryType,
    Expiry,
    HistoryQuery,
    Lot,
    Maturity,
    Member,
    Page,
    PendingAward,
    Redemption,
    Reward,
    default_expiry,
    due_events,
    plan_spend,
)
from tally.errors import (
    Detail,
    InsufficientPoints,
    MemberNotFound,
    RedemptionNotFound,
    RewardNotFound,
    ValidationFailed,
    invalid,
)
from tally.ports import MemberState, Tx


class Due(Exception):
    """Raised inside a read when the member has work due: the read is retried as a write."""


# The rules applied to one member inside one transaction.


def locked_member(
    tx: Tx, program_id: int, member_id: str, now: datetime, *, spending: int | None = None
) -> MemberState:
    """The member, locked for a change and brought up to date with everything due by `now`.

    With `spending`, the lots a spend of that many points draws on come along (`spend_lots`).
    They are dropped when a catch-up ran (it may expire lots and post pending awards), and
    `spend` then reads them itself.
    """
    locked = tx.member_state(program_id, member_id, now=now, lock=True, spending=spending)
    if locked is None:
        raise MemberNotFound(f"Member {member_id} does not exist.")
    if locked.due:
        member = catch_up(tx, locked.member, now)
        return replace(locked, member=member, due=False, spend_lots=None)
    return locked


def locked_members(
    tx: Tx, program_id: int, member_ids: list[str], now: datetime
) -> dict[str, MemberState]:
    """The members that exist among `member_ids`, locked and brought up to date, in one go."""
    states = tx.member_states(program_id, member_ids, now=now, lock=True)
    for member_id, state in states.items():
        if state.due:
            states[member_id] = replace(state, member=catch_up(tx, state.member, now), due=False)
    return states


def catch_up(tx: Tx, member: Member, now: datetime) -> Member:
    """Post pending awards and expire lots that are due by `now`, in the order they fell due."""
    pending = [
        PendingAward(e.id, e.points, e.available_at or e.created_at, e.expires_at)
        for e in tx.pending_awards(member.pk, due_by=now)
    ]
    account = member.account
    for event in due_events(pending, tx.open_lots(member.pk, expiring_by=now), now=now):
        if isinstance(event, Maturity):
            account = _mature(tx, member, account, event)
        else:
            account = _expire(tx, member, account, event)
    tx.save_account(member.pk, account)
    return replace(member, account=account)


def _mature(tx: Tx, member: Member, account: Account, event: Maturity) -> Account:
    award = event.award
    account = account.hold(-award.points).post(EntryType.AWARD, award.points)
    tx.post_pending(
        award.entry_id, seq=account.last_seq, balance_after=account.balance, posted_at=event.at
    )
    tx.insert_lot(
        Lot(award.entry_id, award.points, award.expires_at, account.last_seq), member_pk=member.pk
    )
    return account


def _expire(tx: Tx, member: Member, account: Account, event: Expiry) -> Account:
    lot = event.lot
    account = account.post(EntryType.EXPIRE, -lot.remaining).counted()
    entry = _new_entry(
        member,
        account,
        EntryType.EXPIRE,
        -lot.remaining,
        reason=f"Expired: what was left of {lot.entry_id}",
        now=event.at,
    )
    tx.insert_entry(entry)
    tx.set_remaining(lot.entry_id, 0)
    tx.insert_draws(entry.id, [Draw(lot.entry_id, lot.remaining)])
    return account


def _new_entry(
    member: Member,
    account: Account,
    kind: EntryType,
    points: int,
    *,
    reason: str,
    now: datetime,
    status: EntryStatus = EntryStatus.POSTED,
    reference: str | None = None,
    metadata: str | None = None,
    available_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> Entry:
    """An entry at the account's newest ledger position (posted ones carry the new balance)."""
    return Entry(
        id=ids.new_id("txn_"),
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
    )


def award(
    tx: Tx, member: Member, cmd: AwardCommand, *, expire_after_days: int | None, now: datetime
) -> Posting:
    posting = plan_award(member, cmd, expire_after_days=expire_after_days, now=now)
    write_awards(tx, [posting])
    return posting


def plan_award(
    member: Member, cmd: AwardCommand, *, expire_after_days: int | None, now: datetime
) -> Posting:
    """The entry and account an award makes (nothing written yet); raises if it cannot be."""
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
    if account.balance + account.pending + cmd.points > MAX_BALANCE:
        raise invalid("points", f"Member {member.member_id} cannot hold more points.")
    if pending:
        account = account.hold(cmd.points).numbered().counted()
    else:
        account = account.post(EntryType.AWARD, cmd.points).counted()
    entry = _new_entry(
        member,
        account,
        EntryType.AWARD,
        cmd.points,
        reason=cmd.reason,
        now=now,
        status=EntryStatus.PENDING if pending else EntryStatus.POSTED,
        reference=cmd.reference,
        metadata=cmd.metadata,
        available_at=cmd.available_at,
        expires_at=expires_at,
    )
    return Posting(entry, account)


def write_awards(tx: Tx, postings: list[Posting]) -> None:
    """Write planned awards: their entries, a lot for each posted one, each member's account."""
    tx.insert_entries([p.entry for p in postings])
    tx.insert_lots(
        [
            (Lot(p.entry.id, p.entry.points, p.entry.expires_at, p.entry.seq), p.entry.member_pk)
            for p in postings
            if p.entry.status is EntryStatus.POSTED
        ]
    )
    # Only each member's last account matters: it already counts the earlier awards.
    tx.save_accounts({p.entry.member_pk: p.account for p in postings})


def spend(
    tx: Tx,
    member: Member,
    kind: EntryType,
    points: int,
    *,
    reason: str,
    now: datetime,
    reference: str | None = None,
    metadata: str | None = None,
    lots: list[Lot] | None = None,
) -> Posting:
    """Take `points` from the member's lots in spend order, as one entry of `kind`.

    `lots`: the open lots covering `points`, when the caller read them with the member.
    """
    account = member.account
    if account.balance < points:
        message = f"Member {member.member_id} has {account.balance} points, needs {points}."
        raise InsufficientPoints(
            message,
            details=[
                Detail(message, "points", {"available": account.balance, "requested": points})
            ],
        )
    if lots is None:
        lots = tx.open_lots(member.pk, covering=points)
    draws = plan_spend(lots, points)
    account = account.post(kind, -points).counted()
    entry = _new_entry(
        member,
        account,
        kind,
        -points,
        reason=reason,
        now=now,
        reference=reference,
        metadata=metadata,
    )
    tx.insert_entry(entry)
    remaining = {lot.entry_id: lot.remaining for lot in lots}
    for draw in draws:
        tx.set_remaining(draw.lot_id, remaining[draw.lot_id] - draw.points)
    tx.insert_draws(entry.id, draws)
    tx.save_account(member.pk, account)
    return Posting(entry, account)


def refund(tx: Tx, locked: MemberState, points: int, *, reason: str, now: datetime) -> Posting:
    """Give `points` back as a new lot that expires under the program's current policy."""
    expires_at = default_expiry(effective_at=now, expire_after_days=locked.expire_after_days)
    member = locked.member
    account = member.account.post(EntryType.REFUND, points).counted()
    entry = _new_entry(
        member, account, EntryType.REFUND, points, reason=reason, now=now, expires_at=expires_at
    )
    tx.insert_entry(entry)
    tx.insert_lot(Lot(entry.id, points, expires_at, entry.seq), member_pk=member.pk)
    tx.save_account(member.pk, account)
    return Posting(entry, account)


def history_page(tx: Tx, member: Member, query: HistoryQuery, page: Page) -> Listing[Entry]:
    total = tx.count_entries(member, query) if query.filtered else member.account.entry_count
    if page.offset >= total:
        return Listing([], total, page)
    # Pages past the middle are read from the oldest end, so the last page of a long history
    # costs as little as the first.
    from_oldest = total - page.offset - page.size
    if page.offset > total // 2:
        limit = page.size + min(from_oldest, 0)
        rows = tx.list_entries(
            member, query, offset=max(from_oldest, 0), limit=limit, newest_first=False
        )
        return Listing(rows[::-1], total, page)
    rows = tx.list_entries(member, query, offset=page.offset, limit=page.size, newest_first=True)
    return Listing(rows, total, page)


def catch_up_members(tx: Tx, *, members: list[tuple[int, str]], clock: Clock) -> None:
    now = clock()
    for program_id, member_id in members:
        locked_member(tx, program_id, member_id, now)


def current_member(
    tx: Tx, program_id: int, member_id: str, now: datetime, writable: bool
) -> Member:
    """The member with everything due by `now` applied (see `current_state`)."""
    return current_state(tx, program_id, member_id, now, writable).member


def current_state(
    tx: Tx,
    program_id: int,
    member_id: str,
    now: datetime,
    writable: bool,
    *,
    with_expiration: bool = False,
) -> MemberState:
    """The member's state with everything due by `now` applied.

    A read cannot apply anything: it raises `Due`, and the read runs again as a write, where
    the member is locked and brought up to date. A read that finds nothing due is one statement.
    """
    if writable:
        state = locked_member(tx, program_id, member_id, now)
        if not with_expiration:
            return state
        # Read again after the catch-up, which may have expired the soonest lots.
        found = tx.member_state(program_id, member_id, now=now, lock=False, with_expiration=True)
        assert found is not None and not found.due
        return found
    found = tx.member_state(
        program_id, member_id, now=now, lock=False, with_expiration=with_expiration
    )
    if found is None:
        raise MemberNotFound(f"Member {member_id} does not exist.")
    if found.due:
        raise Due()
    return found


def reward_or_raise(tx: Tx, program_id: int, reward_id: str, *, lock: bool = False) -> Reward:
    reward = tx.get_reward(program_id, reward_id, lock=lock)
    if reward is None:
        raise RewardNotFound(f"Reward {reward_id} does not exist.")
    return reward


def redemption_or_raise(
    tx: Tx, program_id: int, redemption_id: str, *, lock: bool = False
) -> Redemption:
    redemption = tx.get_redemption(program_id, redemption_id, lock=lock)
    if redemption is None:
        raise RedemptionNotFound(f"Redemption {redemption_id} does not exist.")
    return redemption


def bulk_rejected(failures: list[BulkFailure], total: int) -> ValidationFailed:
    details = []
    for failure in failures:
        for detail in failure.error.details or [Detail(failure.error.message)]:
            where = f"awards[{failure.index}]"
            field_name = f"{where}.{detail.field}" if detail.field else where
            details.append(
                Detail(detail.message, field_name, {**detail.extra, "code": failure.error.code})
            )
    return ValidationFailed(
        f"{len(failures)} of {total} awards failed; with atomic: true none were applied.",
        details=details,
    )
