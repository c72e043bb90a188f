"""`ROUTES`: the one table of routes that the router and the OpenAPI document are built from.

One module per feature holds its handlers and its rows, in the same shape: `members`, `points`,
`program`, `rewards` (with redemptions), `events` (the feed), `webhooks` (endpoints, deliveries),
`keys` (the calling key), `files` (CSV imports and exports) and `operations` (`/healthz`,
`/readyz`, `/metrics`, outside `/v1`). A row's fields are `spec.RouteSpec`. `BUSIEST` is the
order the router tries them in; `starlette_routes` builds the router's routes from the table.
"""

from __future__ import annotations

from starlette.routing import Route

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

BUSIEST = ("award", "balance", "deduct", "get_member", "redeem", "history", "transfer")
"""The operations a loyalty program calls most, which the router tries first (it tries the
routes one by one, about 0.4 µs each; an award was the ninth); the rest in the table's order.
No two routes match the same request, so the order changes nothing else."""


def starlette_routes(
    routes: tuple[RouteSpec, ...], *, busiest: tuple[str, ...] = BUSIEST
) -> list[Route]:
    """The router's routes for `routes`, the `busiest` operations first, the rest in the
    table's order (`busiest=()`: all in the table's order)."""
    rank = {operation: n for n, operation in enumerate(busiest)}
    ordered = sorted(routes, key=lambda route: rank.get(route.operation_id, len(rank)))
    return [Route(r.path, r.handler, methods=[r.method]) for r in ordered]
