"""Rewards and redemptions: the catalog, redeeming a reward for points, and cancelling that.

The points a redemption takes are a ledger row like any other (`points.py` shows them); the
spending rules themselves are the service's.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tally.commands import RedeemCommand, RewardChanges, RewardDraft
from tally.http import callers, inputs, outputs
from tally.http import schemas as s
from tally.http.routes.spec import PAGING, RouteSpec

# Rewards


async def create_reward(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.RewardIn)
    draft = RewardDraft(
        body.name, body.points_cost, body.stock, body.active, s.stored_json(body.metadata)
    )
    reply = await callers.ledger(request).rewards.create(
        write.program_id,
        draft,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(outputs.reward_out),
    )
    return outputs.reply_response(reply)


async def list_rewards(request: Request) -> Response:
    program_id = await callers.reader(request)
    listing = await callers.ledger(request).rewards.listing(program_id, inputs.page(request))
    return outputs.listing_response(listing, outputs.reward_out)


async def get_reward(request: Request) -> Response:
    program_id = await callers.reader(request)
    reward = await callers.ledger(request).rewards.get(
        program_id, inputs.path_id(request, "reward_id")
    )
    return outputs.json_response(outputs.ok(outputs.reward_out(reward)))


async def patch_reward(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.RewardPatch)
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
    reward = await callers.ledger(request).rewards.update(
        write.program_id, inputs.path_id(request, "reward_id"), changes
    )
    return outputs.json_response(outputs.ok(outputs.reward_out(reward)))


# Redemptions


async def redeem(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.RedemptionIn)
    command = RedeemCommand(
        body.member_id, body.reward_id, body.quantity, s.stored_json(body.metadata)
    )
    reply = await callers.ledger(request).rewards.redeem(
        write.program_id,
        command,
        created_by=write.key_id,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(lambda result: outputs.redemption_out(result.redemption)),
    )
    return outputs.reply_response(reply)


async def cancel_redemption(request: Request) -> Response:
    write = await callers.writer(request)
    inputs.no_fields(write.body)
    reply = await callers.ledger(request).rewards.cancel_redemption(
        write.program_id,
        inputs.path_id(request, "redemption_id"),
        created_by=write.key_id,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.okay(lambda result: outputs.redemption_out(result.redemption)),
    )
    return outputs.reply_response(reply)


async def get_redemption(request: Request) -> Response:
    program_id = await callers.reader(request)
    found = await callers.ledger(request).rewards.redemption(
        program_id, inputs.path_id(request, "redemption_id")
    )
    return outputs.json_response(outputs.ok(outputs.redemption_out(found)))


async def member_redemptions(request: Request) -> Response:
    program_id = await callers.reader(request)
    listing = await callers.ledger(request).rewards.redemptions(
        program_id, inputs.path_id(request, "member_id"), inputs.page(request)
    )
    return outputs.listing_response(listing, outputs.redemption_out)


ROUTES = (
    RouteSpec(
        method="POST",
        path="/v1/rewards",
        operation_id="create_reward",
        handler=create_reward,
        summary="Add a reward to the catalog",
        tag="Rewards",
        response=s.RewardOut,
        status=201,
        body=s.RewardIn,
    ),
    RouteSpec(
        method="GET",
        path="/v1/rewards",
        operation_id="list_rewards",
        handler=list_rewards,
        summary="List rewards",
        tag="Rewards",
        response=s.RewardOut,
        listing=True,
        query=PAGING,
    ),
    RouteSpec(
        method="GET",
        path="/v1/rewards/{reward_id}",
        operation_id="get_reward",
        handler=get_reward,
        summary="Get a reward",
        tag="Rewards",
        response=s.RewardOut,
        errors=("reward_not_found",),
    ),
    RouteSpec(
        method="PATCH",
        path="/v1/rewards/{reward_id}",
        operation_id="update_reward",
        handler=patch_reward,
        summary="Change a reward",
        tag="Rewards",
        response=s.RewardOut,
        body=s.RewardPatch,
        errors=("reward_not_found",),
    ),
    RouteSpec(
        method="POST",
        path="/v1/redemptions",
        operation_id="redeem",
        handler=redeem,
        summary="Redeem a reward",
        tag="Rewards",
        response=s.RedemptionOut,
        status=201,
        body=s.RedemptionIn,
        errors=(
            "member_not_found",
            "reward_not_found",
            "reward_inactive",
            "out_of_stock",
            "insufficient_points",
        ),
    ),
    RouteSpec(
        method="GET",
        path="/v1/redemptions/{redemption_id}",
        operation_id="get_redemption",
        handler=get_redemption,
        summary="Get a redemption",
        tag="Rewards",
        response=s.RedemptionOut,
        errors=("redemption_not_found",),
    ),
    RouteSpec(
        method="POST",
        path="/v1/redemptions/{redemption_id}/cancel",
        operation_id="cancel_redemption",
        handler=cancel_redemption,
        summary="Cancel a redemption (refunds its points)",
        tag="Rewards",
        response=s.RedemptionOut,
        body=s.CancelIn,
        body_required=False,
        errors=("redemption_not_found", "not_cancellable"),
    ),
    RouteSpec(
        method="GET",
        path="/v1/members/{member_id}/redemptions",
        operation_id="redemptions",
        handler=member_redemptions,
        summary="A member's redemptions, newest first",
        tag="Rewards",
        response=s.RedemptionOut,
        listing=True,
        query=PAGING,
        errors=("member_not_found",),
    ),
)
