"""Webhook endpoints and their delivery log (api.md section 8).

An endpoint's secret is shown only in the answers to its creation and to `rotate_secret`;
every other answer leaves it out. Another program's endpoints and deliveries answer `404
not_found` exactly as ones that exist nowhere.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tally.commands import EndpointChanges, EndpointDraft, Requeued
from tally.domain import Delivery, DeliveryStatus, WebhookEndpoint
from tally.errors import invalid
from tally.http import callers, inputs, outputs
from tally.http import schemas as s
from tally.http.routes.spec import PAGING, RouteSpec

TAG = "Webhooks"


def endpoint_out(e: WebhookEndpoint) -> s.WebhookEndpointOut:
    return s.WebhookEndpointOut(
        e.id, e.url, list(e.events), e.description, e.enabled, e.created_at, e.updated_at
    )


def endpoint_secret_out(e: WebhookEndpoint) -> s.WebhookEndpointSecretOut:
    return s.WebhookEndpointSecretOut(
        e.id,
        e.url,
        list(e.events),
        e.description,
        e.enabled,
        e.secret,
        e.created_at,
        e.updated_at,
    )


def delivery_out(d: Delivery) -> s.DeliveryOut:
    return s.DeliveryOut(
        delivery_id=d.id,
        event_id=d.event_id,
        event_type=d.event_type,
        status=d.status.value,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        next_attempt_at=d.next_attempt_at,
        created_at=d.created_at,
        updated_at=d.updated_at,
    )


async def create_endpoint(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.WebhookEndpointIn)
    reply = await callers.ledger(request).webhooks.create(
        write.program_id,
        EndpointDraft(body.url, body.events, body.description),
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.created(endpoint_secret_out),
    )
    return outputs.reply_response(reply)


async def list_endpoints(request: Request) -> Response:
    program_id = await callers.reader(request)
    listing = await callers.ledger(request).webhooks.listing(program_id, inputs.page(request))
    return outputs.listing_response(listing, endpoint_out)


async def get_endpoint(request: Request) -> Response:
    program_id = await callers.reader(request)
    found = await callers.ledger(request).webhooks.get(
        program_id, inputs.path_id(request, "endpoint_id")
    )
    return outputs.json_response(outputs.ok(endpoint_out(found)))


async def patch_endpoint(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.WebhookEndpointPatch)
    unset = msgspec.UNSET
    changes = EndpointChanges(
        url=None if body.url is unset else body.url,
        events=None if body.events is unset else body.events,
        description=None if body.description is unset else body.description,
        description_set=body.description is not unset,
        enabled=None if body.enabled is unset else body.enabled,
    )
    changed = await callers.ledger(request).webhooks.update(
        write.program_id, inputs.path_id(request, "endpoint_id"), changes
    )
    return outputs.json_response(outputs.ok(endpoint_out(changed)))


async def delete_endpoint(request: Request) -> Response:
    write = await callers.writer(request)
    gone = await callers.ledger(request).webhooks.delete(
        write.program_id, inputs.path_id(request, "endpoint_id")
    )
    return outputs.json_response(outputs.ok(s.WebhookEndpointDeletedOut(gone.id, True)))


async def rotate_secret(request: Request) -> Response:
    write = await callers.writer(request)
    inputs.no_fields(write.body)
    reply = await callers.ledger(request).webhooks.rotate_secret(
        write.program_id,
        inputs.path_id(request, "endpoint_id"),
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.okay(endpoint_secret_out),
    )
    return outputs.reply_response(reply)


async def list_deliveries(request: Request) -> Response:
    program_id = await callers.reader(request)
    status = inputs.query_value(request, "status")
    if status is not None and status not in DeliveryStatus.__members__.values():
        raise invalid("status", "status must be one of pending, succeeded, failed.")
    listing = await callers.ledger(request).webhooks.deliveries(
        program_id,
        inputs.path_id(request, "endpoint_id"),
        None if status is None else DeliveryStatus(status),
        inputs.page(request),
    )
    return outputs.listing_response(listing, delivery_out)


async def retry_delivery(request: Request) -> Response:
    write = await callers.writer(request)
    inputs.no_fields(write.body)
    reply = await callers.ledger(request).webhooks.retry(
        write.program_id,
        inputs.path_id(request, "endpoint_id"),
        inputs.path_id(request, "delivery_id"),
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.okay(delivery_out),
    )
    return outputs.reply_response(reply)


async def recover(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.RecoverIn)
    since = inputs.utc(body.since, field="since")
    assert since is not None
    reply = await callers.ledger(request).webhooks.recover(
        write.program_id,
        inputs.path_id(request, "endpoint_id"),
        since,
        idempotency=inputs.idempotency(request, write.body),
        render=outputs.okay(_recovered_out),
    )
    return outputs.reply_response(reply)


def _recovered_out(done: Requeued) -> s.RecoveredOut:
    return s.RecoveredOut(done.queued)


_ONE = "/v1/webhook_endpoints/{endpoint_id}"

ROUTES = (
    RouteSpec(
        method="POST",
        path="/v1/webhook_endpoints",
        operation_id="create_webhook_endpoint",
        handler=create_endpoint,
        summary="Add a webhook endpoint (the answer shows its secret, once)",
        tag=TAG,
        response=s.WebhookEndpointSecretOut,
        status=201,
        body=s.WebhookEndpointIn,
    ),
    RouteSpec(
        method="GET",
        path="/v1/webhook_endpoints",
        operation_id="list_webhook_endpoints",
        handler=list_endpoints,
        summary="List webhook endpoints",
        tag=TAG,
        response=s.WebhookEndpointOut,
        listing=True,
        query=PAGING,
    ),
    RouteSpec(
        method="GET",
        path=_ONE,
        operation_id="get_webhook_endpoint",
        handler=get_endpoint,
        summary="Get a webhook endpoint",
        tag=TAG,
        response=s.WebhookEndpointOut,
        errors=("not_found",),
    ),
    RouteSpec(
        method="PATCH",
        path=_ONE,
        operation_id="update_webhook_endpoint",
        handler=patch_endpoint,
        summary="Change a webhook endpoint (url, events, description, enabled)",
        tag=TAG,
        response=s.WebhookEndpointOut,
        body=s.WebhookEndpointPatch,
        errors=("not_found",),
    ),
    RouteSpec(
        method="DELETE",
        path=_ONE,
        operation_id="delete_webhook_endpoint",
        handler=delete_endpoint,
        summary="Delete a webhook endpoint and its delivery log",
        tag=TAG,
        response=s.WebhookEndpointDeletedOut,
        errors=("not_found",),
    ),
    RouteSpec(
        method="POST",
        path=_ONE + "/rotate_secret",
        operation_id="rotate_webhook_secret",
        handler=rotate_secret,
        summary="A new secret; the old one keeps signing beside it for 24 hours",
        tag=TAG,
        response=s.WebhookEndpointSecretOut,
        body=s.CancelIn,
        body_required=False,
        errors=("not_found",),
    ),
    RouteSpec(
        method="GET",
        path=_ONE + "/deliveries",
        operation_id="list_deliveries",
        handler=list_deliveries,
        summary="The endpoint's delivery log, newest first",
        tag=TAG,
        response=s.DeliveryOut,
        listing=True,
        query=("status", *PAGING),
        errors=("not_found",),
    ),
    RouteSpec(
        method="POST",
        path=_ONE + "/deliveries/{delivery_id}/retry",
        operation_id="retry_delivery",
        handler=retry_delivery,
        summary="Queue a delivery again, now",
        tag=TAG,
        response=s.DeliveryOut,
        body=s.CancelIn,
        body_required=False,
        errors=("not_found",),
    ),
    RouteSpec(
        method="POST",
        path=_ONE + "/recover",
        operation_id="recover_deliveries",
        handler=recover,
        summary="Queue again every failed delivery since a time",
        tag=TAG,
        response=s.RecoveredOut,
        body=s.RecoverIn,
        errors=("not_found",),
    ),
)
