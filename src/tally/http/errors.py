"""The one table from error code to HTTP status, and the envelope every error is sent in.

The app answers with it (`error_response`) and the OpenAPI document is built from it. Which rule
each code stands for is in `tally/errors.py`; which codes a route can answer with is in
`routes/spec.py`.
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from tally.errors import TallyError
from tally.http import schemas

STATUS_OF_CODE: dict[str, int] = {
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "member_not_found": 404,
    "transaction_not_found": 404,
    "reward_not_found": 404,
    "redemption_not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "member_exists": 409,
    "member_erased": 409,
    "idempotency_in_progress": 409,
    "not_cancellable": 409,
    "not_reversible": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "headers_too_large": 431,
    "validation_error": 422,
    "insufficient_points": 422,
    "idempotency_key_reused": 422,
    "out_of_stock": 422,
    "reward_inactive": 422,
    "rate_limited": 429,
    "internal_error": 500,
    "unavailable": 503,
}

RETRY_AFTER_SECONDS: dict[str, int] = {"unavailable": 1}
"""Codes answered with a fixed `Retry-After`: how long a client should wait before retrying."""

WITH_RETRY_AFTER = frozenset({*RETRY_AFTER_SECONDS, "rate_limited"})
"""Codes answered with `Retry-After` (a refusal by the rate limiter says its own seconds)."""


def status_of(code: str) -> int:
    """The status of `code`; a code missing from the table is a bug, answered as one (500)."""
    return STATUS_OF_CODE.get(code, 500)


def error_body(error: TallyError) -> schemas.ErrorBody:
    """`{code, message, details}`: also the `error` of each failed item of a bulk award."""
    details = [
        {**({"field": d.field} if d.field else {}), "message": d.message, **d.extra}
        for d in error.details
    ]
    return schemas.ErrorBody(error.code, error.message, details)


def error_response(error: TallyError) -> Response:
    """The error envelope with the status of the error's code."""
    body = msgspec.json.encode(schemas.ErrorOut(success=False, error=error_body(error)))
    retry_after = RETRY_AFTER_SECONDS.get(error.code)
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return Response(
        body, status_code=status_of(error.code), media_type="application/json", headers=headers
    )
