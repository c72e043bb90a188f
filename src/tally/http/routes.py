"""The `/v1` routes: each reads its input, calls one use case, and renders the answer.

`ROUTES` is the one table both the router and the OpenAPI document are built from.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tally.commands import (
    AwardCommand,
    BalanceView,
    BulkCommand,
    BulkItemError,
    BulkOutcome,
    DeductCommand,
    Listing,
    Posting,
    RedeemCommand,
    Reply,
    RewardChanges,
    RewardDraft,
)
from tally.domain import Entry, Member, Profile, Program, Redemption, Reward, Scope
from tally.errors import TallyError
from tally.http import inputs
from tally.http import schemas as s
from tally.http.errors import error_body
from tally.service import Ledger

encode = msgspec.json.Encoder().encode


def ok(data: Any, *, meta: s.ListMeta | None = None) -> bytes:
    if meta is None:
        return encode({"success": True, "data": data})
    return encode({"success": True, "data": data, "meta": meta})


def json_response(body: bytes, status: int = 200, *, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _reply(reply: Reply) -> Response:
    return json_response(reply.body, reply.status, replayed=reply.replayed)


def _listing(listing: Listing[Any], render: Callable[[Any], Any]) -> Response:
    page = listing.page
    meta = s.ListMeta(page.number, page.size, listing.total, math.ceil(listing.total / page.size))
    return json_response(ok([render(item) for item in listing.items], meta=meta))


# Renderers: domain values → response structs.


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


def member_out(member: Member) -> s.MemberOut:
    p = member.profile
    return s.MemberOut(p.member_id, p.email, p.name, s.raw(p.metadata), member.created_at)


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


def program_out(program: Program) -> s.ProgramOut:
    return s.ProgramOut(program.name, program.points_expire_after_days, program.created_at)


def _bulk_out(outcome: BulkOutcome) -> s.BulkOut:
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


def _created(render: Callable[[Any], Any]) -> Callable[[Any], tuple[int, bytes]]:
    return lambda value: (201, ok(render(value)))


def _okay(render: Callable[[Any], Any]) -> Callable[[Any], tuple[int, bytes]]:
    return lambda value: (200, ok(render(value)))


# Handlers.


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def _caller(request: Request, needs: Scope) -> int:
    principal = await _ledger(request).authenticate(inputs.bearer(request), needs=needs)
    return principal.program_id


async def _write_input(request: Request) -> tuple[int, bytes]:
    """Authenticate for writing first, then read the body (so strangers learn nothing)."""
    program_id = await _caller(request, Scope.WRITE)
    body = await inputs.body_bytes(request, limit=request.app.state.settings.max_body_bytes)
    return program_id, body


def _award_command(body: s.AwardIn) -> AwardCommand:
    return AwardCommand(
        member_id=body.member_id,
        points=body.points,
        reason=body.reason,
        reference=body.reference,
        metadata=s.stored_json(body.metadata),
        available_at=inputs.utc(body.available_at),
        expires_at=inputs.utc(body.expires_at),
    )


async def award(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    command = _award_command(inputs.decode(raw, s.AwardIn))
    reply = await _ledger(request).award(
        program_id,
        command,
        idempotency=inputs.idempotency(request, raw),
        render=_created(created_out),
    )
    return _reply(reply)


def _bulk_item(raw: msgspec.Raw, index: int) -> AwardCommand | BulkItemError:
    try:
        return _award_command(inputs.decode(bytes(raw), s.AwardIn, prefix=f"awards[{index}]."))
    except TallyError as error:
        loose = msgspec.json.decode(raw)
        member_id = loose.get("member_id") if isinstance(loose, dict) else None
        return BulkItemError(member_id if isinstance(member_id, str) else None, error)


async def award_bulk(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    body = inputs.decode(raw, s.BulkAwardIn)
    command = BulkCommand([_bulk_item(item, i) for i, item in enumerate(body.awards)], body.atomic)
    reply = await _ledger(request).award_bulk(
        program_id,
        command,
        idempotency=inputs.idempotency(request, raw),
        render=_okay(_bulk_out),
    )
    return _reply(reply)


async def deduct(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    body = inputs.decode(raw, s.DeductIn)
    command = DeductCommand(
        body.member_id, body.points, body.reason, body.reference, s.stored_json(body.metadata)
    )
    reply = await _ledger(request).deduct(
        program_id,
        command,
        idempotency=inputs.idempotency(request, raw),
        render=_created(created_out),
    )
    return _reply(reply)


async def balance(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    view: BalanceView = await _ledger(request).balance(
        program_id, inputs.path_id(request, "member_id")
    )
    a = view.account
    upcoming = view.next_expiration
    out = s.BalanceOut(
        member_id=view.member_id,
        balance=a.balance,
        lifetime_earned=a.lifetime_earned,
        lifetime_redeemed=a.lifetime_redeemed,
        pending=a.pending,
        lifetime_deducted=a.lifetime_deducted,
        lifetime_expired=a.lifetime_expired,
        next_expiration=None if upcoming is None else s.NextExpiration(*upcoming),
    )
    return json_response(ok(out))


async def history(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    query, page = inputs.history_query(request), inputs.page(request)
    listing = await _ledger(request).history(
        program_id, inputs.path_id(request, "member_id"), query, page
    )
    return _listing(listing, transaction_out)


async def transaction(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    entry = await _ledger(request).transaction(
        program_id, inputs.path_id(request, "transaction_id")
    )
    return json_response(ok(transaction_out(entry)))


async def cancel_transaction(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    reply = await _ledger(request).cancel_award(
        program_id,
        inputs.path_id(request, "transaction_id"),
        idempotency=inputs.idempotency(request, raw),
        render=_okay(lambda posting: transaction_out(posting.entry)),
    )
    return _reply(reply)


async def create_member(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    body = inputs.decode(raw, s.MemberIn) if raw.strip() else s.MemberIn()
    profile = Profile(body.member_id or "", body.email, body.name, s.stored_json(body.metadata))
    reply = await _ledger(request).create_member(
        program_id,
        profile,
        idempotency=inputs.idempotency(request, raw),
        render=_created(member_out),
    )
    return _reply(reply)


async def get_member(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    member = await _ledger(request).member(program_id, inputs.path_id(request, "member_id"))
    return json_response(ok(member_out(member)))


async def list_members(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    listing = await _ledger(request).members(program_id, inputs.page(request))
    return _listing(listing, member_out)


async def get_program(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    return json_response(ok(program_out(await _ledger(request).program(program_id))))


async def patch_program(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    body = inputs.decode(raw, s.ProgramPatch)
    ledger = _ledger(request)
    if body.points_expire_after_days is msgspec.UNSET:
        program = await ledger.program(program_id)
    else:
        program = await ledger.set_expiry_policy(program_id, body.points_expire_after_days)
    return json_response(ok(program_out(program)))


async def create_reward(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    body = inputs.decode(raw, s.RewardIn)
    draft = RewardDraft(
        body.name, body.points_cost, body.stock, body.active, s.stored_json(body.metadata)
    )
    reply = await _ledger(request).create_reward(
        program_id,
        draft,
        idempotency=inputs.idempotency(request, raw),
        render=_created(reward_out),
    )
    return _reply(reply)


async def list_rewards(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    return _listing(await _ledger(request).rewards(program_id, inputs.page(request)), reward_out)


async def get_reward(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    reward = await _ledger(request).reward(program_id, inputs.path_id(request, "reward_id"))
    return json_response(ok(reward_out(reward)))


async def patch_reward(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    body = inputs.decode(raw, s.RewardPatch)
    unset = msgspec.UNSET
    changes = RewardChanges(
        name=None if body.name is unset else body.name,
        points_cost=None if body.points_cost is unset else body.points_cost,
        stock=None if body.stock is unset else body.stock,
        stock_set=body.stock is not unset,
        active=None if body.active is unset else body.active,
        metadata=None if body.metadata is unset else s.stored_json(body.metadata),
        metadata_set=body.metadata is not unset,
    )
    reward = await _ledger(request).update_reward(
        program_id, inputs.path_id(request, "reward_id"), changes
    )
    return json_response(ok(reward_out(reward)))


async def redeem(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    body = inputs.decode(raw, s.RedemptionIn)
    command = RedeemCommand(
        body.member_id, body.reward_id, body.quantity, s.stored_json(body.metadata)
    )
    reply = await _ledger(request).redeem(
        program_id,
        command,
        idempotency=inputs.idempotency(request, raw),
        render=_created(lambda result: redemption_out(result.redemption)),
    )
    return _reply(reply)


async def cancel_redemption(request: Request) -> Response:
    program_id, raw = await _write_input(request)
    reply = await _ledger(request).cancel_redemption(
        program_id,
        inputs.path_id(request, "redemption_id"),
        idempotency=inputs.idempotency(request, raw),
        render=_okay(lambda result: redemption_out(result.redemption)),
    )
    return _reply(reply)


async def get_redemption(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    found = await _ledger(request).redemption(program_id, inputs.path_id(request, "redemption_id"))
    return json_response(ok(redemption_out(found)))


async def member_redemptions(request: Request) -> Response:
    program_id = await _caller(request, Scope.READ)
    listing = await _ledger(request).redemptions(
        program_id, inputs.path_id(request, "member_id"), inputs.page(request)
    )
    return _listing(listing, redemption_out)


# The table.


@dataclass(frozen=True)
class RouteSpec:
    """One route: how to serve it and how to describe it."""

    method: str
    path: str
    handler: Callable[[Request], Awaitable[Response]]
    summary: str
    tag: str
    response: type | None
    status: int = 200
    body: type | None = None
    listing: bool = False
    errors: tuple[str, ...] = ()
    query: tuple[str, ...] = field(default=())

    @property
    def scope(self) -> Scope:
        return Scope.READ if self.method == "GET" else Scope.WRITE


_PAGING = ("page", "per_page")
_WRITE_ERRORS = ("invalid_json", "unsupported_media_type", "payload_too_large", "validation_error")

ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "POST",
        "/v1/members",
        create_member,
        "Enrol a member",
        "Members",
        s.MemberOut,
        201,
        s.MemberIn,
        errors=(*_WRITE_ERRORS, "member_exists"),
    ),
    RouteSpec(
        "GET",
        "/v1/members",
        list_members,
        "List members",
        "Members",
        s.MemberOut,
        listing=True,
        query=_PAGING,
        errors=("validation_error",),
    ),
    RouteSpec(
        "GET",
        "/v1/members/{member_id}",
        get_member,
        "Get a member",
        "Members",
        s.MemberOut,
        errors=("member_not_found",),
    ),
    RouteSpec(
        "GET",
        "/v1/members/{member_id}/balance",
        balance,
        "Get a member's balance",
        "Points",
        s.BalanceOut,
        errors=("member_not_found",),
    ),
    RouteSpec(
        "GET",
        "/v1/members/{member_id}/transactions",
        history,
        "A member's transaction history, newest first",
        "Points",
        s.TransactionOut,
        listing=True,
        query=(*_PAGING, "type", "from", "to"),
        errors=("member_not_found", "validation_error"),
    ),
    RouteSpec(
        "POST",
        "/v1/points/award",
        award,
        "Award points",
        "Points",
        s.TransactionCreatedOut,
        201,
        s.AwardIn,
        errors=(*_WRITE_ERRORS, "member_not_found"),
    ),
    RouteSpec(
        "POST",
        "/v1/points/award/bulk",
        award_bulk,
        "Award points to up to 10,000 members in one request",
        "Points",
        s.BulkOut,
        200,
        s.BulkAwardSchema,
        errors=_WRITE_ERRORS,
    ),
    RouteSpec(
        "POST",
        "/v1/points/deduct",
        deduct,
        "Deduct points (manual adjustment)",
        "Points",
        s.TransactionCreatedOut,
        201,
        s.DeductIn,
        errors=(*_WRITE_ERRORS, "member_not_found", "insufficient_points"),
    ),
    RouteSpec(
        "GET",
        "/v1/transactions/{transaction_id}",
        transaction,
        "Get a transaction",
        "Points",
        s.TransactionOut,
        errors=("transaction_not_found",),
    ),
    RouteSpec(
        "POST",
        "/v1/transactions/{transaction_id}/cancel",
        cancel_transaction,
        "Cancel a pending award",
        "Points",
        s.TransactionOut,
        errors=("transaction_not_found", "not_cancellable"),
    ),
    RouteSpec("GET", "/v1/program", get_program, "The program's settings", "Program", s.ProgramOut),
    RouteSpec(
        "PATCH",
        "/v1/program",
        patch_program,
        "Change the program's settings",
        "Program",
        s.ProgramOut,
        200,
        s.ProgramPatch,
        errors=_WRITE_ERRORS,
    ),
    RouteSpec(
        "POST",
        "/v1/rewards",
        create_reward,
        "Add a reward to the catalog",
        "Rewards",
        s.RewardOut,
        201,
        s.RewardIn,
        errors=_WRITE_ERRORS,
    ),
    RouteSpec(
        "GET",
        "/v1/rewards",
        list_rewards,
        "List rewards",
        "Rewards",
        s.RewardOut,
        listing=True,
        query=_PAGING,
        errors=("validation_error",),
    ),
    RouteSpec(
        "GET",
        "/v1/rewards/{reward_id}",
        get_reward,
        "Get a reward",
        "Rewards",
        s.RewardOut,
        errors=("reward_not_found",),
    ),
    RouteSpec(
        "PATCH",
        "/v1/rewards/{reward_id}",
        patch_reward,
        "Change a reward",
        "Rewards",
        s.RewardOut,
        200,
        s.RewardPatch,
        errors=(*_WRITE_ERRORS, "reward_not_found"),
    ),
    RouteSpec(
        "POST",
        "/v1/redemptions",
        redeem,
        "Redeem a reward",
        "Rewards",
        s.RedemptionOut,
        201,
        s.RedemptionIn,
        errors=(
            *_WRITE_ERRORS,
            "member_not_found",
            "reward_not_found",
            "reward_inactive",
            "out_of_stock",
            "insufficient_points",
        ),
    ),
    RouteSpec(
        "GET",
        "/v1/redemptions/{redemption_id}",
        get_redemption,
        "Get a redemption",
        "Rewards",
        s.RedemptionOut,
        errors=("redemption_not_found",),
    ),
    RouteSpec(
        "POST",
        "/v1/redemptions/{redemption_id}/cancel",
        cancel_redemption,
        "Cancel a redemption (refunds its points)",
        "Rewards",
        s.RedemptionOut,
        errors=("redemption_not_found", "not_cancellable"),
    ),
    RouteSpec(
        "GET",
        "/v1/members/{member_id}/redemptions",
        member_redemptions,
        "A member's redemptions, newest first",
        "Rewards",
        s.RedemptionOut,
        listing=True,
        query=_PAGING,
        errors=("member_not_found", "validation_error"),
    ),
)
