"""How each ledger object looks outside Tally: in API responses and in the data of events.

An event's `data` is "the object exactly as the API returns it at that moment" (api.md, section
8), so the API (`tally.http.outputs`) and the outbox (`tally.service.outbox`) render with the
same structs and functions, kept here, below both. `metadata` travels as the JSON text it was
stored as (`msgspec.Raw`), so it is returned byte for byte and never re-encoded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from msgspec import Meta, Raw, Struct

from tally.domain import Entry, Member, Redemption, Reward

StoredJson = Annotated[Raw, Meta(extra_json_schema={"type": "object"})]


class TransactionOut(Struct):
    transaction_id: str
    member_id: str
    type: str
    status: str
    points: int
    reason: str
    reference: str | None
    metadata: StoredJson | None
    balance_after: int | None
    created_at: datetime
    # Who made the row: the public id of the API key (`key_…`), or `system` (an expiry).
    created_by: str
    posted_at: datetime | None
    available_at: datetime | None
    expires_at: datetime | None
    # A reversal's: the award or deduct it reverses (null on every other row).
    reverses: str | None
    # An award's or deduct's: how many of its points have been reversed (0 on every other row).
    points_reversed: int


class MemberOut(Struct):
    member_id: str
    email: str | None
    name: str | None
    metadata: StoredJson | None
    created_at: datetime
    # When the member's personal data was erased (null while it has not been).
    erased_at: datetime | None


class RewardOut(Struct):
    reward_id: str
    name: str
    points_cost: int
    stock: int | None
    active: bool
    metadata: StoredJson | None
    created_at: datetime


class RedemptionOut(Struct):
    redemption_id: str
    member_id: str
    reward_id: str
    quantity: int
    points: int
    status: str
    transaction_id: str
    refund_transaction_id: str | None
    created_at: datetime
    cancelled_at: datetime | None


def raw(text: str | None) -> Raw | None:
    return None if text is None else Raw(text.encode())


# Renderers: domain values -> structs.


def transaction_out(entry: Entry) -> TransactionOut:
    return TransactionOut(
        transaction_id=entry.id,
        member_id=entry.member_id,
        type=entry.type.value,
        status=entry.status.value,
        points=entry.points,
        reason=entry.reason,
        reference=entry.reference,
        metadata=raw(entry.metadata),
        balance_after=entry.balance_after,
        created_at=entry.created_at,
        created_by=entry.created_by,
        posted_at=entry.posted_at,
        available_at=entry.available_at,
        expires_at=entry.expires_at,
        reverses=entry.reverses,
        points_reversed=entry.points_reversed,
    )


def member_out(member: Member) -> MemberOut:
    p = member.profile
    return MemberOut(
        p.member_id, p.email, p.name, raw(p.metadata), member.created_at, member.erased_at
    )


def reward_out(reward: Reward) -> RewardOut:
    return RewardOut(
        reward.id,
        reward.name,
        reward.points_cost,
        reward.stock,
        reward.active,
        raw(reward.metadata),
        reward.created_at,
    )


def redemption_out(r: Redemption) -> RedemptionOut:
    return RedemptionOut(
        r.id,
        r.member_id,
        r.reward_id,
        r.quantity,
        r.points,
        r.status.value,
        r.transaction_id,
        r.refund_transaction_id,
        r.created_at,
        r.cancelled_at,
    )
