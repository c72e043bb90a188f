"""Between a `Call` and HTTP, for both clients: the request that carries it, the code of an
answer, and what an answer or a failure becomes (the result, or a `TallyError`)."""

from __future__ import annotations

import uuid
from typing import TypeVar

import httpx
import msgspec

from tally_client.calls import Call
from tally_client.errors import ConnectionFailed, TallyError, UnexpectedResponse, error_class
from tally_client.models import ErrorBody
from tally_client.retries import NOT_SENT, retry_after

T = TypeVar("T")

_encoder = msgspec.json.Encoder()


class _Refusal(msgspec.Struct):
    error: ErrorBody


_refusal = msgspec.json.Decoder(_Refusal)


def request(http: httpx.Client | httpx.AsyncClient, call: Call[T]) -> httpx.Request:
    """The HTTP request of `call`. A POST carries its Idempotency-Key, made up here when the
    caller gave none, and kept for every retry of this request."""
    headers: dict[str, str] = {}
    content = None
    if call.body is not None:
        content = _encoder.encode(call.body)
        headers["Content-Type"] = "application/json"
    elif call.csv is not None:
        content = call.csv
        headers["Content-Type"] = "text/csv"
    if call.method == "POST":
        headers["Idempotency-Key"] = call.idempotency_key or new_idempotency_key()
    return http.build_request(
        call.method, call.path, params=dict(call.query), content=content, headers=headers
    )


def new_idempotency_key() -> str:
    return f"tc_{uuid.uuid4().hex}"


def error_code(response: httpx.Response) -> str | None:
    """The API's error code of a refusal; None for a success or an answer that is not the
    API's error envelope."""
    if response.is_success:
        return None
    try:
        return _refusal.decode(response.content).error.code
    except msgspec.DecodeError:
        return None


def result(call: Call[T], response: httpx.Response) -> T:
    """The result of a success, or the error a refusal stands for, raised."""
    if not response.is_success:
        raise refusal(response)
    try:
        return call.decode(response.content)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise UnexpectedResponse(
            f"{call.method} {call.path} answered a body this client cannot read: {error}",
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from error


def refusal(response: httpx.Response) -> TallyError:
    """The `TallyError` subclass of the answer's code, with what the answer said."""
    try:
        error = _refusal.decode(response.content).error
    except msgspec.DecodeError:
        start = response.content[:200].decode(errors="replace")
        error = ErrorBody(
            code=UnexpectedResponse.code,
            message=f"HTTP {response.status_code} without Tally's error body: {start!r}",
        )
    return error_class(error.code)(
        error.message,
        status=response.status_code,
        code=error.code,
        details=list(error.details),
        request_id=response.headers.get("x-request-id"),
        retry_after=retry_after(response),
        idempotency_key=response.request.headers.get("idempotency-key"),
    )


def failure(request: httpx.Request, error: httpx.TransportError) -> ConnectionFailed:
    """No answer came: say whether the request may have been applied, and how to settle it."""
    key = request.headers.get("idempotency-key")
    if isinstance(error, NOT_SENT):
        outcome = "the request was not sent"
    elif key is not None:
        outcome = (
            "the outcome is unknown; sending it again with idempotency_key="
            f"{key!r} has at most one effect"
        )
    else:
        outcome = "the outcome is unknown"
    message = f"{request.method} {request.url.path}: {type(error).__name__} ({error}); {outcome}"
    return ConnectionFailed(message, idempotency_key=key)
