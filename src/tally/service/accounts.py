"""Loading a member up to date and saving what a rule planned for it, inside one transaction.

Before any read or change of a member, what is due by `now` is applied first (pending awards
post, lots expire), so no answer ever shows a stale figure. The decisions are `tally.rules`';
this module only reads the rows they need and writes the rows they return.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from tally.commands import Posting
from tally.domain import Account, Entry, EntryStatus, EntryType, Lot, Member
from tally.errors import MemberNotFound
from tally.ports import MemberState, Tx
from tally.rules import points as rules
from tally.rules import reversals
from tally.rules.lots import Expiry, Maturity, PendingAward, due_events
from tally.service import outbox
from tally.service.runner import Due

# A member's counters are kept after every entry at a ledger position that is a multiple of
# this, so a balance at a past moment replays at most this many entries (`reports`).
CHECKPOINT_EVERY = 256


def locked_member(tx: Tx, program_id: int, member_id: str, now: datetime) -> MemberState:
    """The member, locked for a change and brought up to date with everything due by `now`."""
    found = tx.members.state(program_id, member_id, now=now, lock=True)
    return _caught_up(tx, found, member_id, now)


def locked_for_spend(
    tx: Tx, program_id: int, member_id: str, now: datetime, points: int
) -> MemberState:
    """`locked_member`, with the lots a spend of `points` draws on (`spend_lots`).

    They are dropped when a catch-up ran (it may expire lots and post pending awards), and
    `spend` then reads them itself.
    """
    found = tx.members.state_for_spend(program_id, member_id, now=now, points=points)
    return _caught_up(tx, found, member_id, now)


def _caught_up(tx: Tx, locked: MemberState | None, member_id: str, now: datetime) -> MemberState:
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
    states = tx.members.states(program_id, member_ids, now=now)
    for member_id, state in states.items():
        if state.due:
            states[member_id] = replace(state, member=catch_up(tx, state.member, now), due=False)
    return states


def catch_up(tx: Tx, member: Member, now: datetime) -> Member:
    """Post pending awards and expire lots that are due by `now`, in the order they fell due."""
    pending_entries = {e.id: e for e in tx.entries.pending_awards(member.pk, due_by=now)}
    pending = [
        PendingAward(e.id, e.points, e.available_at or e.created_at, e.expires_at)
        for e in pending_entries.values()
    ]
    account = member.account
    repaid: dict[str, Lot] = {}  # matured lots that paid a debt: they hold less than planned
    for event in due_events(pending, tx.lots.due(member.pk, by=now), now=now):
        if isinstance(event, Maturity):
            before = account.balance
            account, lot = rules.plan_maturity(account, event)
            tx.entries.post_pending(
                lot.entry_id, seq=lot.seq, balance_after=account.balance, posted_at=event.at
            )
            (held,) = write_lots(tx, member.pk, [lot], balance_before=before)
            if held.remaining != lot.remaining:
                repaid[lot.entry_id] = held
            _checkpoint(tx, member.pk, lot.seq, event.at, account)
            posted = pending_entries[lot.entry_id]
            outbox.transaction_posted(
                tx, rules.posted(posted, lot, balance_after=account.balance, at=event.at), now
            )
        else:
            if event.lot.entry_id in repaid:
                event = Expiry(repaid[event.lot.entry_id], event.at)
                if not event.lot.remaining:
                    continue
            expired = rules.plan_expiry(member, account, event)
            write_spend(tx, expired, now)
            account = expired.account
    tx.members.save_account(member.pk, account)
    return replace(member, account=account)


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
        found = tx.members.state_with_expiration(program_id, member_id, now=now)
        assert found is not None and not found.due
        return found
    if with_expiration:
        found = tx.members.state_with_expiration(program_id, member_id, now=now)
    else:
        found = tx.members.state(program_id, member_id, now=now, lock=False)
    if found is None:
        raise MemberNotFound(f"Member {member_id} does not exist.")
    if found.due:
        raise Due()
    return found


def current_member(
    tx: Tx, program_id: int, member_id: str, now: datetime, writable: bool
) -> Member:
    """The member with everything due by `now` applied (see `current_state`)."""
    return current_state(tx, program_id, member_id, now, writable).member


def write_awards(tx: Tx, postings: list[Posting], now: datetime) -> None:
    """Write planned awards: their entries, a lot for each posted one, each member's account,
    and their events."""
    tx.entries.insert_many([p.entry for p in postings])
    outbox.transactions_created(tx, [p.entry for p in postings], now)
    posted = [p for p in postings if p.entry.status is EntryStatus.POSTED]
    # An award to a member in debt (its balance before it below zero) pays the debt first.
    tx.lots.insert_many(
        [(rules.lot_of(p.entry), p.entry.member_pk) for p in posted if p.balance >= p.entry.points]
    )
    for p in posted:
        if p.balance < p.entry.points:
            before = p.balance - p.entry.points
            write_lots(tx, p.entry.member_pk, [rules.lot_of(p.entry)], balance_before=before)
    for p in postings:
        _checkpoint(tx, p.entry.member_pk, p.entry.seq, p.entry.effective_at, p.account)
    # Only each member's last account matters: it already counts the earlier awards.
    tx.members.save_accounts({p.entry.member_pk: p.account for p in postings})


def write_spend(tx: Tx, spend: rules.Spend, now: datetime) -> None:
    """Write a planned spend or expiry: its entry and event, the lots' new remainders and the
    draws (the caller saves the account)."""
    tx.entries.insert(spend.entry)
    outbox.transactions_created(tx, [spend.entry], now)
    for lot_id, remaining in spend.remaining.items():
        tx.lots.set_remaining(lot_id, remaining)
    tx.lots.insert_draws(spend.entry.id, spend.draws)
    checkpointed(tx, spend.entry, spend.account)


def write_credit(tx: Tx, posting: Posting, lots: list[Lot], now: datetime) -> None:
    """Write a planned entry that brings points as `lots` (a transfer in): the entry and its
    event, the lots, and the member's account."""
    tx.entries.insert(posting.entry)
    outbox.transactions_created(tx, [posting.entry], now)
    before = posting.balance - posting.entry.points
    write_lots(tx, posting.entry.member_pk, lots, balance_before=before)
    checkpointed(tx, posting.entry, posting.account)
    tx.members.save_account(posting.entry.member_pk, posting.account)


def write_lots(tx: Tx, member_pk: int, lots: list[Lot], *, balance_before: int) -> list[Lot]:
    """Write the new lots of a credit to a member whose balance was `balance_before`, and
    return them as they stand. While the member owes points (a balance below zero after a
    reversal), the lots pay that debt first, oldest debt first (`rules.reversals.settle`): each
    payment is a draw by the reversal owed on the new lot."""
    if balance_before >= 0:
        tx.lots.insert_many([(lot, member_pk) for lot in lots])
        return lots
    debts = tx.lots.debts(member_pk)
    held: list[Lot] = []
    for lot in lots:
        settled = reversals.settle(lot, debts)
        debts = settled.debts
        tx.lots.insert(lot, member_pk=member_pk)  # whole: a lot's points are what it was made of
        for repayment in settled.repayments:
            tx.lots.insert_draws(repayment.reversal_id, [repayment.draw])
        if settled.lot.remaining != lot.remaining:
            tx.lots.set_remaining(lot.entry_id, settled.lot.remaining)
        held.append(settled.lot)
    return held


def spend(
    tx: Tx,
    member: Member,
    kind: EntryType,
    points: int,
    *,
    reason: str,
    now: datetime,
    created_by: str,
    reference: str | None = None,
    metadata: str | None = None,
    lots: list[Lot] | None = None,
) -> Posting:
    """Take `points` from the member's lots in spend order, as one entry of `kind`.

    `lots`: the open lots covering `points`, when they were read with the member.
    """
    rules.check_spendable(member, points)  # before reading lots a refused spend never needs
    if lots is None:
        lots = tx.lots.covering(member.pk, points)
    planned = rules.plan_spend(
        member,
        lots,
        kind,
        points,
        reason=reason,
        now=now,
        created_by=created_by,
        reference=reference,
        metadata=metadata,
    )
    write_spend(tx, planned, now)
    tx.members.save_account(member.pk, planned.account)
    return planned.posting


def refund(
    tx: Tx, locked: MemberState, points: int, *, reason: str, now: datetime, created_by: str
) -> Posting:
    """Give `points` back as a new lot that expires under the program's current policy."""
    posting = rules.plan_refund(
        locked.member,
        points,
        expire_after_days=locked.expire_after_days,
        reason=reason,
        now=now,
        created_by=created_by,
    )
    tx.entries.insert(posting.entry)
    outbox.transactions_created(tx, [posting.entry], now)
    before = locked.member.account.balance
    write_lots(tx, locked.member.pk, [rules.lot_of(posting.entry)], balance_before=before)
    checkpointed(tx, posting.entry, posting.account)
    tx.members.save_account(locked.member.pk, posting.account)
    return posting


def checkpointed(tx: Tx, entry: Entry, account: Account) -> None:
    """Keep `account` as it is after `entry`, if its ledger position is one of those kept."""
    _checkpoint(tx, entry.member_pk, entry.seq, entry.effective_at, account)


def _checkpoint(tx: Tx, member_pk: int, seq: int, at: datetime, account: Account) -> None:
    """Keep the account as it is after the entry at ledger position `seq`, if that is one of
    the positions kept (every write of an entry comes through here)."""
    if seq % CHECKPOINT_EVERY == 0:
        tx.reports.checkpoint(member_pk, seq=seq, at=at, account=account)
