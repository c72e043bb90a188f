"""Members: enrol one, list them, fetch one, change one's profile, erase one's personal data.

A member's balance and history are points (`points.py`); their redemptions are in `rewards.py`.
"""

from __future__ import annotations

from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response

from tally.commands import MemberChanges
from tally.domain import Profile
from tally.http import callers, inputs, outputs
from tally.http import schemas as s
from tally.http.routes.spec import PAGING, RouteSpec


async def create_member(request: Request) -> Response:
    write = await callers.writer(request)
    # Every field of a member is optional, so an empty body enrols one with a generated id.
    body = inputs.decode(write.body, s.MemberIn) if write.body.strip() else s.MemberIn()
    profile = Profile(body.member_id or "", body.email, body.name, s.stored_json(body.metadata))
    reply = await callers.ledger(request).members.create(
        write.program_id,
        profile,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(outputs.member_out),
    )
    return outputs.reply_response(reply)


async def list_members(request: Request) -> Response:
    program_id = await callers.reader(request)
    listing = await callers.ledger(request).members.listing(program_id, inputs.page(request))
    return outputs.listing_response(listing, outputs.member_out)


async def get_member(request: Request) -> Response:
    program_id = await callers.reader(request)
    member = await callers.ledger(request).members.get(
        program_id, inputs.path_id(request, "member_id")
    )
    return outputs.json_response(outputs.ok(outputs.member_out(member)))


async def update_member(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.MemberPatch)
    changes = MemberChanges(
        email=None if body.email is UNSET else body.email,
        email_set=body.email is not UNSET,
        name=None if body.name is UNSET else body.name,
        name_set=body.name is not UNSET,
        metadata=None if body.metadata is UNSET else s.stored_json(body.metadata),
        metadata_set=body.metadata is not UNSET,
    )
    member = await callers.ledger(request).members.update(
        write.program_id, inputs.path_id(request, "member_id"), changes
    )
    return outputs.json_response(outputs.ok(outputs.member_out(member)))


async def erase_member(request: Request) -> Response:
    write = await callers.writer(request)
    inputs.no_fields(write.body)
    reply = await callers.ledger(request).erasure.erase(
        write.program_id,
        inputs.path_id(request, "member_id"),
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.okay(outputs.member_out),
    )
    return outputs.reply_response(reply)


ROUTES = (
    RouteSpec(
        method="POST",
        path="/v1/members",
        operation_id="create_member",
        handler=create_member,
        summary="Enrol a member",
        tag="Members",
        response=s.MemberOut,
        status=201,
        body=s.MemberIn,
        body_required=False,
        errors=("member_exists",),
    ),
    RouteSpec(
        method="GET",
        path="/v1/members",
        operation_id="list_members",
        handler=list_members,
        summary="List members",
        tag="Members",
        response=s.MemberOut,
        listing=True,
        query=PAGING,
    ),
    RouteSpec(
        method="GET",
        path="/v1/members/{member_id}",
        operation_id="get_member",
        handler=get_member,
        summary="Get a member",
        tag="Members",
        response=s.MemberOut,
        errors=("member_not_found",),
    ),
    RouteSpec(
        method="PATCH",
        path="/v1/members/{member_id}",
        operation_id="update_member",
        handler=update_member,
        summary="Change a member's email, name or metadata",
        tag="Members",
        response=s.MemberOut,
        body=s.MemberPatch,
        errors=("member_not_found", "member_erased"),
    ),
    RouteSpec(
        method="POST",
        path="/v1/members/{member_id}/erase",
        operation_id="erase_member",
        handler=erase_member,
        summary="Erase a member's personal data for good (the ledger stays)",
        tag="Members",
        response=s.MemberOut,
        body=s.CancelIn,
        body_required=False,
        errors=("member_not_found",),
    ),
)
