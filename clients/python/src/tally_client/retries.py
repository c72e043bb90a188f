"""When to send a request again, and after how long: the same rules for both clients.

Sent again, a bounded number of times:
- an answer of `429` or `503` (Tally's `rate_limited` and `unavailable`, or a proxy's), after
  the server's `Retry-After`, and `409 idempotency_in_progress` (the first attempt is still
  running);
- a connection that could not be made (nothing was sent), for every method;
- a connection that failed or timed out after the request was sent (the outcome is unknown),
  for the methods that are safe to repeat: GET, PATCH (it sets the same values again) and POST
  (it carries an Idempotency-Key, so a repeat is answered from the first attempt). Not DELETE.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

RETRIED_STATUSES = frozenset({429, 503})
RETRIED_CODES = frozenset({"idempotency_in_progress"})
REPEATABLE = frozenset({"GET", "PATCH", "POST"})
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
TRANSIENT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Retries:
    """At most `max_retries` more attempts. The wait before attempt n (from 0) is the server's
    `Retry-After` when it gave one, else `backoff * 2**n` (at most `max_backoff`) scaled by a
    random factor from 0.5 to 1, so clients refused together do not come back together. A
    `Retry-After` over `max_retry_after` is not waited for: the refusal is raised at once."""

    max_retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    jitter: Callable[[], float] = field(default=random.random)  # from 0 to 1

    def after_answer(
        self, response: httpx.Response, code: str | None, attempt: int
    ) -> float | None:
        """Seconds to wait before sending again after this answer, or None: it stands."""
        again = response.status_code in RETRIED_STATUSES or code in RETRIED_CODES
        if attempt >= self.max_retries or not again:
            return None
        told = retry_after(response)
        if told is None:
            return self._backoff(attempt)
        return told if told <= self.max_retry_after else None

    def after_failure(self, method: str, error: httpx.TransportError, attempt: int) -> float | None:
        """Seconds to wait before sending again after no answer came, or None: give up."""
        if attempt >= self.max_retries:
            return None
        if isinstance(error, NOT_SENT) or (isinstance(error, TRANSIENT) and method in REPEATABLE):
            return self._backoff(attempt)
        return None

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2**attempt)
        return float(ceiling * (0.5 + self.jitter() / 2))


def retry_after(response: httpx.Response) -> float | None:
    """The answer's `Retry-After` in seconds (it may be a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
