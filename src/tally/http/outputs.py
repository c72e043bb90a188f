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

from tally.commands import BalanceView, BulkOutcome, Listing, Posting, ProgramReport, Reply
from tally.domain import Lot, Program
from tally.http import schemas as s
from tally.http.errors import error_body
from tally.keys import Principal
from tally.rules.transfers import Transfer
from tally.views import member_out as member_out
from tally.views import redemption_out as redemption_out
from tally.views import reward_out as reward_out
from tally.views import transaction_out as transaction_out

encode = msgspec.json.Encoder().encode


# JSON responses


def ok(data: Any, *, meta: s.ListMeta | s.FeedMeta | None = None) -> bytes:
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
        lifetime_transferred_in=a.lifetime_transferred_in,
        lifetime_transferred_out=a.lifetime_transferred_out,
        next_expiration=None if upcoming is None else s.NextExpiration(*upcoming),
    )


def lot_out(lot: Lot) -> s.LotOut:
    return s.LotOut(
        lot_id=lot.entry_id,
        transaction_id=lot.made_by,
        remaining=lot.remaining,
        expires_at=lot.expires_at,
    )


def key_out(principal: Principal, program: Program) -> s.KeyOut:
    return s.KeyOut(key_id=principal.key_id, scope=principal.scope, program=program.name)


def transfer_out(transfer: Transfer) -> s.TransferOut:
    return s.TransferOut(
        transfer.id, transaction_out(transfer.sent.entry), transaction_out(transfer.received.entry)
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


def program_out(program: Program) -> s.ProgramOut:
    return s.ProgramOut(
        program.name, program.points_expire_after_days, program.created_at, program.enrol_on_award
    )


def report_out(report: ProgramReport) -> s.ReportOut:
    return s.ReportOut(
        from_=report.first,
        to=report.last,
        interval=report.interval,
        outstanding=s.ReportOutstanding(report.balance, report.pending),
        expiring=[s.ReportExpiring(before, points) for before, points in report.expiring],
        members=s.ReportMembers(report.members, report.active_members),
        periods=[s.ReportPeriodOut(p.start, **p.figures) for p in report.periods],
    )
