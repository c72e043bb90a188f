"""`RouteSpec`: one row of the route table, how to serve a route and how to describe it, and
the error codes a route's shape implies (a key, a body, an Idempotency-Key, a query).

The rows themselves are in the feature modules beside this one; the table is assembled in
`__init__.py`; the status of each code is the error table's (`http/errors.py`).
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

    `operation_id` (required, unique) is the operation's `operationId` in the OpenAPI document
    and the name of the Python client's method for it (`award`, `get_member`; a test holds
    `clients/python` to it), so generated clients in any language read well too. `body` is the
    JSON body the route decodes (None: it decodes none), `body_required` False when an empty
    body stands for `{}`; `auth` False for the operations routes outside `/v1` (no key, no rate
    limit); `media_type` of the success when it is not a JSON envelope (`/metrics`); `meta` and
    `query_schemas` as commented below; `errors` are the codes of the route's own rules
    (`member_not_found`, `insufficient_points`, ...); the codes its shape implies are added by
    `error_codes`.
    """

    method: str
    path: str
    operation_id: str
    handler: Handler
    summary: str
    tag: str
    response: type
    status: int = 200
    body: type | None = None
    body_required: bool = True
    # A body read as it is, of this media type (`text/csv`), instead of a JSON `body`.
    body_media_type: str | None = None
    listing: bool = False
    query: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    auth: bool = True
    media_type: str = "application/json"
    # A listing's `meta` when it is not the page meta (`ListMeta`), and the schemas of query
    # parameters whose meaning is this route's own (`type` of an event, not of a transaction).
    meta: type | None = None
    query_schemas: dict[str, dict[str, object]] | None = None

    @property
    def scope(self) -> Scope:
        return Scope.READ if self.method == "GET" else Scope.WRITE

    @property
    def error_codes(self) -> tuple[str, ...]:
        """Every error code the route can answer with: those its shape implies, then its own."""
        if not self.auth:
            return tuple(dict.fromkeys([*A_BUG, *self.errors]))
        codes = [*EVERY_ROUTE]
        if self.scope is Scope.WRITE:
            codes += READING_A_BODY
        if self.body is not None:
            codes += DECODING_JSON
        if self.body_media_type is not None:
            codes += READING_A_FILE
        if self.method == "POST":
            codes += TAKING_AN_IDEMPOTENCY_KEY
        if self.query:
            codes += READING_A_QUERY
        return tuple(dict.fromkeys([*codes, *self.errors]))


PAGING = ("page", "per_page")
"""The query of every list route."""

# What a route's shape implies, and where in the code each code comes from.
EVERY_ROUTE = (
    "unauthorized",
    "forbidden",
    "headers_too_large",
    "rate_limited",
    "internal_error",
    "unavailable",
)
"""The key (`callers.program_of`; `forbidden` is listed on reads too, as on every route, though
only a write refuses a read key), the header and rate limits (`limits.py`), a bug, and a
database that is busy or unreachable."""
A_BUG = ("internal_error",)
"""What a route without a key can still answer (`/healthz`, `/metrics`)."""
READING_A_BODY = ("request_timeout", "payload_too_large", "unsupported_media_type")
"""Every write reads its body (`callers.writer`)."""
DECODING_JSON = ("invalid_json", "validation_error")
"""`inputs.decode`, and the rules the service checks on what was decoded."""
TAKING_AN_IDEMPOTENCY_KEY = (
    "idempotency_in_progress",
    "idempotency_key_reused",
    "validation_error",
)
"""Every POST: a malformed key (`inputs.idempotency`), a key in use or reused (`Runner.change`)."""
READING_A_FILE = ("validation_error",)
"""A body of another media type than JSON (a CSV file): what it holds is judged row by row."""
READING_A_QUERY = ("validation_error",)
"""`inputs.page` and `inputs.history_query`."""
