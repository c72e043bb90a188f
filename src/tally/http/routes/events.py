"""The event feed: `GET /v1/events`, what a consumer polls (api.md, section 8).

Each event is returned as it was written (`msgspec.Raw`): the bytes a webhook delivers for it.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tally.commands import FeedQuery
from tally.errors import invalid
from tally.http import callers, inputs, outputs
from tally.http import schemas as s
from tally.http.routes.spec import RouteSpec
from tally.service.outbox import EVENT_TYPES

FEED_LIMIT = 100
FEED_MAX = 1_000


async def list_events(request: Request) -> Response:
    program_id = await callers.reader(request)
    query = feed_query(request)
    page = await callers.ledger(request).events.feed(program_id, query)
    meta = s.FeedMeta(query.limit, page.has_more, page.next_after)
    return outputs.json_response(
        outputs.ok([msgspec.Raw(e.body.encode()) for e in page.events], meta=meta)
    )


def feed_query(request: Request) -> FeedQuery:
    limit = inputs.int_param(request, "limit", default=FEED_LIMIT, low=1, high=FEED_MAX)
    after = inputs.query_value(request, "after")
    if after is not None and not 1 <= len(after) <= 64:
        raise invalid("after", "after must be an event id (evt_...).")
    kinds = inputs.query_value(request, "type")
    types = None
    if kinds is not None:
        types = [kind.strip() for kind in kinds.split(",")]
        unknown = [kind for kind in types if kind not in EVENT_TYPES]
        if unknown:
            raise invalid(
                "type",
                f"type: {unknown[0]!r} is not an event type; give one or more of "
                f"{', '.join(EVENT_TYPES)}, separated by commas.",
            )
    return FeedQuery(after, limit, types)


ROUTES = (
    RouteSpec(
        method="GET",
        path="/v1/events",
        operation_id="events",
        handler=list_events,
        summary="List events, oldest first, after the one given",
        tag="Events",
        response=s.EventOut,
        listing=True,
        meta=s.FeedMeta,
        query=("after", "limit", "type"),
        query_schemas={
            "after": {"type": "string", "description": "The last event id already seen."},
            "limit": {"type": "integer", "minimum": 1, "maximum": FEED_MAX, "default": FEED_LIMIT},
            "type": {
                "type": "string",
                "description": "Event types, comma-separated: " + ", ".join(EVENT_TYPES),
            },
        },
    ),
)
