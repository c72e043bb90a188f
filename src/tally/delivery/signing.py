"""Standard Webhooks signatures (https://www.standardwebhooks.com): the secrets and the headers.

A secret is `whsec_` + base64 of 32 random bytes; a signature is `v1,` + base64 of HMAC-SHA256,
keyed with the secret's decoded bytes, over `{webhook-id}.{webhook-timestamp}.{body}`. While a
rotated-out secret still signs, `webhook-signature` carries both signatures, space-separated,
and a receiver holding either secret verifies the delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, *, msg_id: str, timestamp: int, body: str) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(signing: list[str], *, msg_id: str, now: datetime, body: str) -> dict[str, str]:
    """The three headers of a delivery of `body` (the event `msg_id`) made at `now`."""
    timestamp = int(now.timestamp())
    signed = " ".join(signature(s, msg_id=msg_id, timestamp=timestamp, body=body) for s in signing)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signed,
    }
