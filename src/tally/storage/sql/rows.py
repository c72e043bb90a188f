"""Rows and values: the column lists, and the conversions between table rows and domain values.

Times are stored as integer microseconds since the epoch (UTC), identical on both backends; a
lot that never expires is stored as expiring at `NEVER`, so one index orders every lot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tally.domain import (
    Account,
    Entry,
    EntryStatus,
    EntryType,
    Lot,
    Member,
    Profile,
    Redemption,
    RedemptionStatus,
    Reward,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEVER = 2**63 - 1
_MICRO = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def opt_micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def opt_time(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def member_columns(alias: str = "") -> str:
    """A member's columns, of the table named `alias` if given. The balance is read as
    `balance - debt`: the stored `balance` never falls below zero, a debt is kept beside it."""
    a = f"{alias}." if alias else ""
    return (
        f"{a}pk, {a}program_id, {a}member_id, {a}email, {a}name, {a}metadata, {a}created_at, "
        f"{a}balance - {a}debt, {a}pending, {a}lifetime_earned, {a}lifetime_redeemed, "
        f"{a}lifetime_deducted, {a}lifetime_expired, {a}last_seq, {a}entry_count, "
        f"{a}lifetime_transferred_in, {a}lifetime_transferred_out, {a}erased_at"
    )


MEMBER_COLUMNS = member_columns()
ENTRY_COLUMNS = (
    "e.id, e.program_id, e.member_pk, e.seq, e.type, e.status, e.points, e.reason, e.reference, "
    "e.metadata, e.balance_after, e.created_at, e.available_at, e.expires_at, e.posted_at, "
    "e.created_by, e.reverses, e.points_reversed"
)
# Where a column selected after ENTRY_COLUMNS (the member_id of a join) is in the row.
AFTER_ENTRY = ENTRY_COLUMNS.count(",") + 1
LOT_COLUMNS = "entry_id, remaining, expires_at, seq, source_id"
REWARD_COLUMNS = "id, program_id, name, points_cost, stock, active, metadata, created_at"
REDEMPTION_COLUMNS = (
    "r.id, r.program_id, r.member_pk, m.member_id, r.reward_id, r.quantity, r.points, r.status, "
    "r.transaction_id, r.refund_transaction_id, r.created_at, r.cancelled_at"
)


def member(row: Sequence[Any]) -> Member:
    return Member(
        pk=row[0],
        program_id=row[1],
        profile=Profile(member_id=row[2], email=row[3], name=row[4], metadata=row[5]),
        created_at=from_micros(row[6]),
        account=Account(*row[7:17]),
        erased_at=opt_time(row[17]),
    )


def account_row(member_pk: int, a: Account) -> tuple[int, ...]:
    return (
        max(a.balance, 0),
        max(-a.balance, 0),  # the debt
        a.pending,
        a.lifetime_earned,
        a.lifetime_redeemed,
        a.lifetime_deducted,
        a.lifetime_expired,
        a.last_seq,
        a.entry_count,
        a.lifetime_transferred_in,
        a.lifetime_transferred_out,
        member_pk,
    )


def entry(row: Sequence[Any], member_id: str) -> Entry:
    return Entry(
        id=row[0],
        program_id=row[1],
        member_pk=row[2],
        member_id=member_id,
        seq=row[3],
        type=EntryType(row[4]),
        status=EntryStatus(row[5]),
        points=row[6],
        reason=row[7],
        reference=row[8],
        metadata=row[9],
        balance_after=row[10],
        created_at=from_micros(row[11]),
        available_at=opt_time(row[12]),
        expires_at=opt_time(row[13]),
        posted_at=opt_time(row[14]),
        created_by=row[15],
        reverses=row[16],
        points_reversed=row[17],
    )


def entry_row(e: Entry) -> tuple[Any, ...]:
    return (
        e.id,
        e.program_id,
        e.member_pk,
        e.seq,
        e.type.value,
        e.status.value,
        e.points,
        e.reason,
        e.reference,
        e.metadata,
        e.balance_after,
        to_micros(e.created_at),
        to_micros(e.effective_at),
        opt_micros(e.available_at),
        opt_micros(e.expires_at),
        opt_micros(e.posted_at),
        e.created_by,
        e.reverses,
        e.points_reversed,
    )


def lot(row: Sequence[Any]) -> Lot:
    expires = None if row[2] == NEVER else from_micros(row[2])
    source = None if row[4] == row[0] else row[4]
    return Lot(entry_id=row[0], remaining=row[1], expires_at=expires, seq=row[3], source=source)


def lot_row(value: Lot, member_pk: int) -> tuple[Any, ...]:
    expires = NEVER if value.expires_at is None else to_micros(value.expires_at)
    return (
        value.entry_id,
        member_pk,
        value.seq,
        value.remaining,
        value.remaining,
        expires,
        value.made_by,
    )


def reward(row: Sequence[Any]) -> Reward:
    return Reward(
        id=row[0],
        program_id=row[1],
        name=row[2],
        points_cost=row[3],
        stock=row[4],
        active=bool(row[5]),
        metadata=row[6],
        created_at=from_micros(row[7]),
    )


def redemption(row: Sequence[Any]) -> Redemption:
    return Redemption(
        id=row[0],
        program_id=row[1],
        member_pk=row[2],
        member_id=row[3],
        reward_id=row[4],
        quantity=row[5],
        points=row[6],
        status=RedemptionStatus(row[7]),
        transaction_id=row[8],
        refund_transaction_id=row[9],
        created_at=from_micros(row[10]),
        cancelled_at=opt_time(row[11]),
    )
