"""What the webhook rules decide, as pure functions: which events an endpoint takes, which URLs
it may have, which secrets sign at a moment, when the next attempt is, and when an endpoint that
keeps failing is turned off. Time is passed in; randomness (the jitter) is passed in as a
fraction in [0, 1)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from tally.domain import WebhookEndpoint
from tally.errors import invalid

ALL_EVENTS = "*"
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
ROTATION_OVERLAP = timedelta(hours=24)
"""How long a rotated-out secret keeps signing beside the new one."""
FAILING_LIMIT = timedelta(days=5)
"""An endpoint that has failed this long without a success is disabled."""
JITTER = 0.2
"""A scheduled delay is stretched by up to this fraction, at random: many deliveries that failed
together (a receiver's outage) do not all come back in the same instant."""
RETRY_AFTER_CAP = 3600.0
"""The longest a receiver's `Retry-After` may push an attempt back (seconds)."""
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
"""Seconds before each attempt: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h."""


def parse_schedule(text: str) -> tuple[float, ...]:
    """`TALLY_WEBHOOKS_RETRY_SCHEDULE`: comma-separated seconds (`0,1,1,2`), at least one."""
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        delays = ()
    if not delays or any(d < 0 or d != d or d == float("inf") for d in delays):
        raise ValueError(
            f"TALLY_WEBHOOKS_RETRY_SCHEDULE must be comma-separated seconds, not {text!r}"
        )
    return delays


def checked_url(url: str) -> str:
    """An endpoint's URL as given, if it is one Tally may post to (its address is checked apart,
    `tally.delivery.addresses`); otherwise a validation error naming `url`."""
    if len(url) > MAX_URL_LENGTH:
        raise invalid("url", f"url must be at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise invalid("url", "url is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise invalid("url", "url must start with http:// or https://.")
    if not parts.hostname:
        raise invalid("url", "url must name a host.")
    if port == 0 or any(c.isspace() or ord(c) < 0x20 for c in url):
        raise invalid("url", "url is not a valid URL.")
    return url


def checked_events(events: Sequence[str], *, known: Iterable[str]) -> tuple[str, ...]:
    """The endpoint's filter: `["*"]`, or event types it knows, each once."""
    if not events:
        raise invalid("events", 'events must list at least one event type, or be ["*"].')
    if ALL_EVENTS in events:
        if len(events) > 1:
            raise invalid("events", '"*" already takes every event; give it alone.')
        return (ALL_EVENTS,)
    allowed = set(known)
    unknown = [e for e in events if e not in allowed]
    if unknown:
        raise invalid("events", f"events: unknown event type {unknown[0]!r}.")
    return tuple(dict.fromkeys(events))


def takes(endpoint_events: Sequence[str], event_type: str) -> bool:
    """Whether an endpoint with this filter is sent events of `event_type`."""
    return ALL_EVENTS in endpoint_events or event_type in endpoint_events


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign a delivery made at `now`: the current one, and the one it replaced
    while that is less than `ROTATION_OVERLAP` old."""
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret is not None and expires is not None and now < expires:
        return [endpoint.secret, endpoint.previous_secret]
    return [endpoint.secret]


def next_attempt_at(
    schedule: Sequence[float],
    attempts: int,
    now: datetime,
    *,
    jitter: float,
    retry_after: float | None = None,
) -> datetime | None:
    """When to try again after `attempts` failed attempts (counted from the schedule's start),
    or None when the schedule is exhausted and the delivery has failed.

    The schedule's delay is stretched by up to `JITTER` of itself (`jitter` in [0, 1)); a
    receiver's `Retry-After` can push it later, never earlier, by at most `RETRY_AFTER_CAP`.
    """
    if attempts >= len(schedule):
        return None
    delay = schedule[attempts] * (1 + JITTER * jitter)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP))
    return now + timedelta(seconds=delay)


def failing_since_after_failure(failing_since: datetime | None, now: datetime) -> datetime:
    """Failures are counted from the first one after the latest success."""
    return now if failing_since is None else failing_since


def failed_too_long(failing_since: datetime | None, now: datetime) -> bool:
    """Whether an endpoint failing since `failing_since` is disabled at `now`."""
    return failing_since is not None and now - failing_since >= FAILING_LIMIT
