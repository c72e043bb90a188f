"""What finding an operation's route costs the router: Starlette's `Route.matches` tried down
the route list until the first full match, as `Router.app` does, for the table's own order
(`ROUTES`) and for the order the app uses (`starlette_routes`, the busiest first).

    .venv/bin/python bench/route_lookup.py

See "The busiest routes first" in bench/README.md.
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

from starlette.routing import Match, Route

from tally.http.routes import ROUTES, starlette_routes

CASES = {
    "award": ("POST", "/v1/points/award"),
    "balance": ("GET", "/v1/members/m42/balance"),
    "deduct": ("POST", "/v1/points/deduct"),
}


def first_full_match(routes: list[Route], scope: dict[str, Any]) -> Route:
    for route in routes:
        if route.matches(scope)[0] is Match.FULL:
            return route
    raise LookupError(scope["path"])


def _lookup(routes: list[Route], scope: dict[str, Any]) -> Callable[[], Route]:
    return lambda: first_full_match(routes, scope)


def main() -> None:
    orders = {
        "table order": starlette_routes(ROUTES, busiest=()),
        "app order": starlette_routes(ROUTES),
    }
    for case, (method, path) in CASES.items():
        scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
        for name, routes in orders.items():
            runs = 50_000
            best = min(timeit.repeat(_lookup(routes, scope), number=runs, repeat=5))
            print(f"{case:8} {name:12} {best / runs * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
