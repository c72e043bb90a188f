"""`RouteSpec`: one row of the route table, how to serve a route and how to describe it.

The rows themselves are in the feature modules beside this one; the table is assembled in
`__init__.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tally.domain import Scope

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, kw_only=True, slots=True)
class RouteSpec:
    """One route: how to serve it and how to describe it.

    `body` is the JSON body the route decodes (None: it decodes none); `errors` are the codes of
    the route's own rules (`member_not_found`, `insufficient_points`, ...).
    """

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    response: type
    status: int = 200
    body: type | None = None
    listing: bool = False
    query: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    @property
    def scope(self) -> Scope:
        return Scope.READ if self.method == "GET" else Scope.WRITE


PAGING = ("page", "per_page")
"""The query of every list route."""
WRITE_ERRORS = ("invalid_json", "unsupported_media_type", "payload_too_large", "validation_error")
