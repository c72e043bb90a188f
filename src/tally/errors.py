"""Every rule Tally enforces has one error class here, with a stable `code`.

Messages name the ids and numbers involved. Only `tally.http` decides which HTTP status a code
gets; the domain and the service never speak HTTP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Detail:
    """One problem with one field of a request (`field` is None for the request as a whole)."""

    message: str
    field: str | None = None
    extra: dict[str, object] = dataclasses.field(default_factory=dict)


class TallyError(Exception):
    """Base of every error a client may see; `code` is stable, `message` is for a person."""

    code = "internal_error"

    def __init__(self, message: str, *, details: list[Detail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidJson(TallyError):
    """The body is not valid JSON, or not a JSON object."""

    code = "invalid_json"


class Unauthorized(TallyError):
    """The API key is missing, malformed, unknown or revoked."""

    code = "unauthorized"


class Forbidden(TallyError):
    """The API key is valid but lacks the scope the route needs."""

    code = "forbidden"


class NotFound(TallyError):
    """No such route or object (also for another program's objects)."""

    code = "not_found"


class MemberNotFound(NotFound):
    """The member does not exist in this program."""

    code = "member_not_found"


class TransactionNotFound(NotFound):
    """The transaction does not exist in this program."""

    code = "transaction_not_found"


class RewardNotFound(NotFound):
    """The reward does not exist in this program."""

    code = "reward_not_found"


class RedemptionNotFound(NotFound):
    """The redemption does not exist in this program."""

    code = "redemption_not_found"


class MethodNotAllowed(TallyError):
    """The route exists but not with this HTTP method."""

    code = "method_not_allowed"


class MemberExists(TallyError):
    """A member with this id already exists in the program."""

    code = "member_exists"


class MemberErased(TallyError):
    """The member's personal data was erased: its profile can no longer be changed."""

    code = "member_erased"


class IdempotencyInProgress(TallyError):
    """A request with the same Idempotency-Key is still being processed."""

    code = "idempotency_in_progress"


class NotCancellable(TallyError):
    """Only pending awards and completed redemptions can be cancelled, once."""

    code = "not_cancellable"


class NotReversible(TallyError):
    """Only posted awards and deducts can be reversed, and only up to what they moved."""

    code = "not_reversible"


class PayloadTooLarge(TallyError):
    """The body is larger than the configured limit."""

    code = "payload_too_large"


class RequestTimeout(TallyError):
    """The request's body did not arrive in time."""

    code = "request_timeout"


class HeadersTooLarge(TallyError):
    """The request's headers are larger, or more, than the server takes."""

    code = "headers_too_large"


class UnsupportedMediaType(TallyError):
    """The body is not `application/json`."""

    code = "unsupported_media_type"


class ValidationFailed(TallyError):
    """Fields are missing, of the wrong type or out of range."""

    code = "validation_error"


class InsufficientPoints(TallyError):
    """A spend asks for more points than the member's balance holds; nothing changes."""

    code = "insufficient_points"


class IdempotencyKeyReused(TallyError):
    """The Idempotency-Key was already used for a different request."""

    code = "idempotency_key_reused"


class OutOfStock(TallyError):
    """The reward has fewer units in stock than asked for."""

    code = "out_of_stock"


class RewardInactive(TallyError):
    """The reward is switched off and cannot be redeemed."""

    code = "reward_inactive"


class Unavailable(TallyError):
    """The database is busy or unreachable; the request changed nothing and may be retried."""

    code = "unavailable"


def invalid(field_name: str, message: str) -> ValidationFailed:
    """A validation error about one field, with the message repeated in its detail."""
    return ValidationFailed(message, details=[Detail(message, field_name)])
