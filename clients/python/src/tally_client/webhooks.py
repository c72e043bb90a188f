"""Checking a webhook delivery (Standard Webhooks): that Tally sent it, unchanged, recently.

Tally signs `{webhook-id}.{webhook-timestamp}.{body}` with HMAC-SHA256, keyed with the
base64-decoded part of the endpoint's secret after `whsec_`; `webhook-signature` lists
`v1,<base64>` signatures separated by spaces (two while a rotated-out secret still signs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

TOLERANCE_SECONDS = 300
"""How far a delivery's timestamp may be from now, either way: older ones may be replays."""


class WebhookVerificationError(Exception):
    """The delivery is not Tally's, was changed, or is too old or too new: refuse it."""


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_seconds: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The event a delivery carries, once its signature and timestamp check out.

    `body` is the request's body exactly as received (bytes, before any JSON parsing);
    `headers` its headers (any mapping; names in any case); `secret` the endpoint's
    `whsec_…` secret. `now` (Unix seconds) is for tests; by default the current time.
    Raises `WebhookVerificationError` for a delivery to refuse, `ValueError` for a secret that
    is not one.
    """
    named = {name.lower(): value for name, value in headers.items()}
    event_id = _header(named, "webhook-id")
    stamp = _header(named, "webhook-timestamp")
    signatures = _header(named, "webhook-signature")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"webhook-timestamp is not a number: {stamp!r}") from None
    drift = (time.time() if now is None else now) - sent_at
    if drift > tolerance_seconds:
        raise WebhookVerificationError(f"the delivery is {drift:.0f} s old: too old")
    if -drift > tolerance_seconds:
        raise WebhookVerificationError(f"the delivery is {-drift:.0f} s in the future")
    signed = f"{event_id}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest())
    if not any(
        version == "v1" and hmac.compare_digest(signature.encode(), expected)
        for version, _, signature in (item.partition(",") for item in signatures.split())
    ):
        raise WebhookVerificationError("no signature matches: not signed with this secret")
    try:
        event = json.loads(body)
    except ValueError as error:
        raise WebhookVerificationError(f"the body is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookVerificationError(f"the {name} header is missing")
    return value


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("the secret is not a webhook secret (whsec_ and base64)") from None
