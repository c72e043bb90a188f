"""What the API sends back: domain values rendered as response structs, in JSON responses.

Renderers are shared by every route that shows the same thing (a transaction looks the same in
a history, alone or cancelled). Errors are rendered by the error table (`errors.py`); what the
structs hold is in `schemas.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.responses import Response

from tally.commands import BalanceView, BulkOutcome, Listing, Posting, Reply
from tally.domain import Entry, Member, Program, Redemption, Reward
from tally.http import schemas as s
from tally.http.errors import error_body

encode = msgspec.json.Encoder().encode


# JSON responses


def ok(data: Any, *, meta: s.ListMeta | None = None) -> bytes:
    """The success envelope: `{"success": true, "data": ...}`, with `meta` for a list."""
    if meta is None:
        return encode({"success": True, "data": data})
    return encode({"success": True, "data": data, "meta": meta})


def json_response(body: bytes, status: int = 200, *, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def reply_response(reply: Reply) -> Response:
    """A write's answer: as it was just made, or as it was stored under its Idempotency-Key."""
    return json_response(reply.body, reply.status, replayed=reply.replayed)


def listing_response(listing: Listing[Any], render: Callable[[Any], Any]) -> Response:
    page = listing.page
    meta = s.ListMeta(page.number, page.size, listing.total, math.ceil(listing.total / page.size))
    return json_response(ok([render(item) for item in listing.items], meta=meta))


def created(render: Callable[[Any], Any]) -> Callable[[Any], tuple[int, bytes]]:
    """How a write renders its result as `201`: inside its transaction, so it can be stored."""
    return lambda value: (201, ok(render(value)))


def okay(render: Callable[[Any], Any]) -> Callable[[Any], tuple[int, bytes]]:
    """How a write renders its result as `200` (see `created`)."""
    return lambda value: (200, ok(render(value)))


# Renderers: domain values -> response structs.


def transaction_out(entry: Entry) -> s.TransactionOut:
    return s.TransactionOut(
        transaction_id=entry.id,
        member_id=entry.member_id,
        type=entry.type.value,
        status=entry.status.value,
        points=entry.points,
        reason=entry.reason,
        reference=entry.reference,
        metadata=s.raw(entry.metadata),
        balance_after=entry.balance_after,
        created_at=entry.created_at,
        posted_at=entry.posted_at,
        available_at=entry.available_at,
        expires_at=entry.expires_at,
    )


def created_out(posting: Posting) -> s.TransactionCreatedOut:
    entry = posting.entry
    return s.TransactionCreatedOut(
        transaction_id=entry.id,
        member_id=entry.member_id,
        points=entry.points,
        type=entry.type.value,
        status=entry.status.value,
        reason=entry.reason,
        reference=entry.reference,
        metadata=s.raw(entry.metadata),
        new_balance=posting.balance,
        available_at=entry.available_at,
        expires_at=entry.expires_at,
        created_at=entry.created_at,
    )


def balance_out(view: BalanceView) -> s.BalanceOut:
    a = view.account
    upcoming = view.next_expiration
    return s.BalanceOut(
        member_id=view.member_id,
        balance=a.balance,
        lifetime_earned=a.lifetime_earned,
        lifetime_redeemed=a.lifetime_redeemed,
        pending=a.pending,
        lifetime_deducted=a.lifetime_deducted,
        lifetime_expired=a.lifetime_expired,
        next_expiration=None if upcoming is None else s.NextExpiration(*upcoming),
    )


def bulk_out(outcome: BulkOutcome) -> s.BulkOut:
    return s.BulkOut(
        processed=len(outcome.postings),
        failed=len(outcome.failures),
        transactions=[
            s.BulkPostingOut(i, p.entry.member_id, p.entry.id, p.balance)
            for i, p in outcome.postings
        ],
        errors=[
            s.BulkErrorOut(f.index, f.member_id, error_body(f.error)) for f in outcome.failures
        ],
    )


def member_out(member: Member) -> s.MemberOut:
    p = member.profile
    return s.MemberOut(p.member_id, p.email, p.name, s.raw(p.metadata), member.created_at)


def program_out(program: Program) -> s.ProgramOut:
    return s.ProgramOut(program.name, program.points_expire_after_days, program.created_at)


def reward_out(reward: Reward) -> s.RewardOut:
    return s.RewardOut(
        reward.id,
        reward.name,
        reward.points_cost,
        reward.stock,
        reward.active,
        s.raw(reward.metadata),
        reward.created_at,
    )


def redemption_out(r: Redemption) -> s.RedemptionOut:
    return s.RedemptionOut(
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
