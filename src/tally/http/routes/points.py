"""Points: award (one or in bulk), deduct, transfer, a member's balance, history and open lots,
one transaction, the cancelling of a pending award and the reversal of an award or a deduct.

Spending points on a reward is a redemption (`rewards.py`); the expiry policy is the program's
(`program.py`).
"""

from __future__ import annotations

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tally.commands import (
    AwardCommand,
    BulkCommand,
    BulkItemError,
    DeductCommand,
    ReverseCommand,
    TransferCommand,
)
from tally.errors import TallyError
from tally.http import callers, inputs, outputs
from tally.http import schemas as s
from tally.http.awards import award_command
from tally.http.routes.spec import PAGING, RouteSpec


def _bulk_item(raw: msgspec.Raw, index: int) -> AwardCommand | BulkItemError:
    """One item of a bulk award: a bad one fails alone, carrying the member it named."""
    prefix = f"awards[{index}]."
    try:
        return award_command(inputs.decode(bytes(raw), s.AwardIn, prefix=prefix), prefix=prefix)
    except TallyError as error:
        return BulkItemError(_named_member(raw), error)


class _Named(msgspec.Struct):
    """What a failed bulk item is still asked for: the member it named, if any. Every other
    value is skipped unread, so a number no type holds (`1e400`) cannot fail it again."""

    member_id: object = None


def _named_member(raw: msgspec.Raw) -> str | None:
    try:
        named = msgspec.json.decode(raw, type=_Named).member_id
    except msgspec.DecodeError:  # not an object
        return None
    return named if isinstance(named, str) else None


async def award(request: Request) -> Response:
    write = await callers.writer(request)
    command = award_command(inputs.decode(write.body, s.AwardIn))
    reply = await callers.ledger(request).points.award(
        write.program_id,
        command,
        created_by=write.key_id,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(outputs.created_out),
    )
    return outputs.reply_response(reply)


def _bulk_command(raw: bytes) -> BulkCommand:
    body = inputs.decode(raw, s.BulkAwardIn)
    return BulkCommand([_bulk_item(item, i) for i, item in enumerate(body.awards)], body.atomic)


async def award_bulk(request: Request) -> Response:
    write = await callers.writer(request)
    # Reading 10,000 items takes tens of milliseconds: off the event loop, like the award itself.
    command = await run_in_threadpool(_bulk_command, write.body)
    reply = await callers.ledger(request).points.award_bulk(
        write.program_id,
        command,
        created_by=write.key_id,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.okay(outputs.bulk_out),
    )
    return outputs.reply_response(reply)


async def deduct(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.DeductIn)
    command = DeductCommand(
        body.member_id, body.points, body.reason, body.reference, s.stored_json(body.metadata)
    )
    reply = await callers.ledger(request).points.deduct(
        write.program_id,
        command,
        created_by=write.key_id,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(outputs.created_out),
    )
    return outputs.reply_response(reply)


async def transfer(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.TransferIn)
    command = TransferCommand(
        body.from_member_id,
        body.to_member_id,
        body.points,
        body.reason,
        body.reference,
        s.stored_json(body.metadata),
    )
    reply = await callers.ledger(request).transfers.transfer(
        write.program_id,
        command,
        created_by=write.key_id,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(outputs.transfer_out),
    )
    return outputs.reply_response(reply)


async def balance(request: Request) -> Response:
    program_id = await callers.reader(request)
    member_id = inputs.path_id(request, "member_id")
    as_of = inputs.moment_param(request, "as_of")
    ledger = callers.ledger(request)
    if as_of is None:
        view = await ledger.points.balance(program_id, member_id)
    else:
        view = await ledger.reports.balance_as_of(program_id, member_id, as_of)
    return outputs.json_response(outputs.ok(outputs.balance_out(view)))


async def history(request: Request) -> Response:
    program_id = await callers.reader(request)
    query, page = inputs.history_query(request), inputs.page(request)
    listing = await callers.ledger(request).points.history(
        program_id, inputs.path_id(request, "member_id"), query, page
    )
    return outputs.listing_response(listing, outputs.transaction_out)


async def lots(request: Request) -> Response:
    program_id = await callers.reader(request)
    listing = await callers.ledger(request).points.lots(
        program_id, inputs.path_id(request, "member_id"), inputs.page(request)
    )
    return outputs.listing_response(listing, outputs.lot_out)


async def get_transaction(request: Request) -> Response:
    program_id = await callers.reader(request)
    entry = await callers.ledger(request).points.transaction(
        program_id, inputs.path_id(request, "transaction_id")
    )
    return outputs.json_response(outputs.ok(outputs.transaction_out(entry)))


async def cancel_transaction(request: Request) -> Response:
    write = await callers.writer(request)
    inputs.no_fields(write.body)
    reply = await callers.ledger(request).lifecycle.cancel_award(
        write.program_id,
        inputs.path_id(request, "transaction_id"),
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.okay(lambda posting: outputs.transaction_out(posting.entry)),
    )
    return outputs.reply_response(reply)


async def reverse_transaction(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.ReverseIn)
    command = ReverseCommand(
        body.reason, body.points, body.allow_negative, body.reference, s.stored_json(body.metadata)
    )
    reply = await callers.ledger(request).reversals.reverse(
        write.program_id,
        inputs.path_id(request, "transaction_id"),
        command,
        created_by=write.key_id,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(lambda reversal: outputs.transaction_out(reversal.entry)),
    )
    return outputs.reply_response(reply)


ROUTES = (
    RouteSpec(
        method="GET",
        path="/v1/members/{member_id}/balance",
        operation_id="balance",
        handler=balance,
        summary="Get a member's balance, now or as it stood at a past moment (as_of)",
        tag="Points",
        response=s.BalanceOut,
        query=("as_of",),
        errors=("member_not_found",),
    ),
    RouteSpec(
        method="GET",
        path="/v1/members/{member_id}/transactions",
        operation_id="history",
        handler=history,
        summary="A member's transaction history, newest first",
        tag="Points",
        response=s.TransactionOut,
        listing=True,
        query=(*PAGING, "type", "from", "to"),
        errors=("member_not_found",),
    ),
    RouteSpec(
        method="GET",
        path="/v1/members/{member_id}/lots",
        operation_id="list_lots",
        handler=lots,
        summary="A member's open lots, soonest to expire first",
        tag="Points",
        response=s.LotOut,
        listing=True,
        query=PAGING,
        errors=("member_not_found",),
    ),
    RouteSpec(
        method="POST",
        path="/v1/points/award",
        operation_id="award",
        handler=award,
        summary="Award points",
        tag="Points",
        response=s.TransactionCreatedOut,
        status=201,
        body=s.AwardIn,
        errors=("member_not_found",),
    ),
    RouteSpec(
        method="POST",
        path="/v1/points/award/bulk",
        operation_id="bulk_award",
        handler=award_bulk,
        summary="Award points to up to 10,000 members in one request",
        tag="Points",
        response=s.BulkOut,
        body=s.BulkAwardSchema,
    ),
    RouteSpec(
        method="POST",
        path="/v1/points/deduct",
        operation_id="deduct",
        handler=deduct,
        summary="Deduct points (manual adjustment)",
        tag="Points",
        response=s.TransactionCreatedOut,
        status=201,
        body=s.DeductIn,
        errors=("member_not_found", "insufficient_points"),
    ),
    RouteSpec(
        method="POST",
        path="/v1/points/transfer",
        operation_id="transfer",
        handler=transfer,
        summary="Transfer points from one member to another",
        tag="Points",
        response=s.TransferOut,
        status=201,
        body=s.TransferIn,
        errors=("member_not_found", "insufficient_points"),
    ),
    RouteSpec(
        method="GET",
        path="/v1/transactions/{transaction_id}",
        operation_id="get_transaction",
        handler=get_transaction,
        summary="Get a transaction",
        tag="Points",
        response=s.TransactionOut,
        errors=("transaction_not_found",),
    ),
    RouteSpec(
        method="POST",
        path="/v1/transactions/{transaction_id}/cancel",
        operation_id="cancel_transaction",
        handler=cancel_transaction,
        summary="Cancel a pending award",
        tag="Points",
        response=s.TransactionOut,
        body=s.CancelIn,
        body_required=False,
        errors=("transaction_not_found", "not_cancellable"),
    ),
    RouteSpec(
        method="POST",
        path="/v1/transactions/{transaction_id}/reverse",
        operation_id="reverse_transaction",
        handler=reverse_transaction,
        summary="Reverse (part of) a posted award or a deduct",
        tag="Points",
        response=s.TransactionOut,
        status=201,
        body=s.ReverseIn,
        errors=("transaction_not_found", "not_reversible", "insufficient_points"),
    ),
)
