"""`ROUTES`: the one table of routes that the router and the OpenAPI document are built from.

One module per feature holds its handlers and its rows, in the same shape: `members`, `points`,
`program`, `rewards` (with redemptions), `events` (the feed), `webhooks` (endpoints, deliveries),
`keys` (the calling key), `files` (CSV imports and exports) and `operations` (`/healthz`,
`/readyz`, `/metrics`, outside `/v1`). A row's fields are `spec.RouteSpec`.
"""

from __future__ import annotations

from tally.http.routes import (
    events,
    files,
    keys,
    members,
    operations,
    points,
    program,
    rewards,
    webhooks,
)
from tally.http.routes.spec import RouteSpec

ROUTES: tuple[RouteSpec, ...] = (
    *members.ROUTES,
    *points.ROUTES,
    *program.ROUTES,
    *rewards.ROUTES,
    *events.ROUTES,
    *webhooks.ROUTES,
    *files.ROUTES,
    *keys.ROUTES,
    *operations.ROUTES,
)
