"""`TallyError` and one subclass per error code of the API, looked up in `ERRORS` by code.

A refusal raises the class of its code (`insufficient_points` → `InsufficientPoints`), so callers
catch exactly what they can handle; a code this client does not know yet (a newer server) raises
`TallyError` itself, with that code. Failures below HTTP are translated once, into
`ConnectionFailed`.
"""

from __future__ import annotations

from typing import Any


class TallyError(Exception):
    """Any refusal or failure of a request.

    `status` is the HTTP status (None when no answer came), `code` the API's stable error code,
    `message` a sentence for a person, `details` the API's `[{"field": ..., "message": ...}]`.
    `idempotency_key` is the key a POST was sent with: sending the same request again later
    with that key (`idempotency_key=...`) has at most one effect, whatever happened to this one.
    """

    code: str = "tally_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        if code is not None:
            self.code = code
        self.details: list[dict[str, Any]] = details or []
        self.request_id = request_id
        self.retry_after = retry_after
        self.idempotency_key = idempotency_key

    def __str__(self) -> str:
        status = "" if self.status is None else f"{self.status} "
        return f"{status}{self.code}: {self.message}"


class ConnectionFailed(TallyError):
    """No answer: the server could not be reached, or the connection failed or timed out."""

    code = "connection_failed"


class UnexpectedResponse(TallyError):
    """An answer that is not Tally's JSON envelope (a proxy's error page, say)."""

    code = "unexpected_response"


class InvalidJson(TallyError):
    """The body is not valid JSON, or not an object."""

    code = "invalid_json"


class Unauthorized(TallyError):
    """The API key is missing, malformed, unknown or revoked."""

    code = "unauthorized"


class Forbidden(TallyError):
    """The key lacks the scope (a `read` key on a route that writes)."""

    code = "forbidden"


class NotFound(TallyError):
    """No such object in this program (also the base of the `...NotFound` below)."""

    code = "not_found"


class MemberNotFound(NotFound):
    """No member with this id in this program."""

    code = "member_not_found"


class TransactionNotFound(NotFound):
    """No transaction with this id in this program."""

    code = "transaction_not_found"


class RewardNotFound(NotFound):
    """No reward with this id in this program."""

    code = "reward_not_found"


class RedemptionNotFound(NotFound):
    """No redemption with this id in this program."""

    code = "redemption_not_found"


class MethodNotAllowed(TallyError):
    """The route does not take this method."""

    code = "method_not_allowed"


class RequestTimeout(TallyError):
    """The request's body did not arrive in time."""

    code = "request_timeout"


class MemberExists(TallyError):
    """A member with this id is already enrolled."""

    code = "member_exists"


class MemberErased(TallyError):
    """The member's personal data was erased; it cannot be changed any more."""

    code = "member_erased"


class IdempotencyInProgress(TallyError):
    """A request with this Idempotency-Key is still running."""

    code = "idempotency_in_progress"


class NotCancellable(TallyError):
    """Only a pending award, or a completed redemption, can be cancelled (once)."""

    code = "not_cancellable"


class NotReversible(TallyError):
    """The transaction cannot be reversed (not a posted award or deduct, or reversed in full)."""

    code = "not_reversible"


class PayloadTooLarge(TallyError):
    """The body is over the server's limit."""

    code = "payload_too_large"


class UnsupportedMediaType(TallyError):
    """The body is not `application/json`."""

    code = "unsupported_media_type"


class HeadersTooLarge(TallyError):
    """The request's headers are over the server's limit."""

    code = "headers_too_large"


class ValidationError(TallyError):
    """A field is missing, of the wrong type or out of range; `details` names it."""

    code = "validation_error"


class InsufficientPoints(TallyError):
    """The balance is smaller than the deduct, transfer or redemption; nothing changed."""

    code = "insufficient_points"


class IdempotencyKeyReused(TallyError):
    """The Idempotency-Key was used before with a different request."""

    code = "idempotency_key_reused"


class OutOfStock(TallyError):
    """The reward's stock is smaller than the quantity asked for."""

    code = "out_of_stock"


class RewardInactive(TallyError):
    """The reward is not active."""

    code = "reward_inactive"


class RateLimited(TallyError):
    """Over the key's rate limit; `retry_after` says how many seconds to wait."""

    code = "rate_limited"


class InternalError(TallyError):
    """A bug in the server, logged there with the request id."""

    code = "internal_error"


class Unavailable(TallyError):
    """The database is unreachable, busy or full; the message says whether a write happened."""

    code = "unavailable"


ERRORS: dict[str, type[TallyError]] = {
    error.code: error
    for error in (
        ConnectionFailed,
        UnexpectedResponse,
        InvalidJson,
        Unauthorized,
        Forbidden,
        NotFound,
        MemberNotFound,
        TransactionNotFound,
        RewardNotFound,
        RedemptionNotFound,
        MethodNotAllowed,
        RequestTimeout,
        MemberExists,
        MemberErased,
        IdempotencyInProgress,
        NotCancellable,
        NotReversible,
        PayloadTooLarge,
        UnsupportedMediaType,
        HeadersTooLarge,
        ValidationError,
        InsufficientPoints,
        IdempotencyKeyReused,
        OutOfStock,
        RewardInactive,
        RateLimited,
        InternalError,
        Unavailable,
    )
}
"""The class of each error code (the API's, and the two this client makes for what is not an
answer of the API): the one table the client raises from."""


def error_class(code: str) -> type[TallyError]:
    """The class raised for `code`; `TallyError` itself for a code this client does not know."""
    return ERRORS.get(code, TallyError)
