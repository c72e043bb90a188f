"""API keys: made with a recognisable prefix and enough randomness; stored only as a hash.

SHA-256 is the right hash here, not a slow password hash: a key carries 256 random bits, so
there is nothing to brute-force, and verification must be cheap on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

KEY_PREFIX = "tally_"
_KEY_SHAPE = re.compile(r"^tally_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key: `secret` is shown once and never stored."""

    secret: str
    secret_hash: str

    @property
    def display_prefix(self) -> str:
        return self.secret[: len(KEY_PREFIX) + 6]


def generate_key() -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(secret, hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def well_formed(secret: str) -> bool:
    """True when `secret` has the shape of a Tally key (so malformed ones skip the database)."""
    return bool(_KEY_SHAPE.match(secret))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the program a verified key belongs to, and what it may do."""

    key_id: str
    program_id: int
    scope: str


class KeyCache:
    """Verified keys for at most `ttl` seconds, so revocation reaches every process in time.

    Unknown keys are cached too (as None), so a flood of bad keys costs no database reads.
    Time is passed in (the service's clock): an entry is trusted from when it was stored until
    `ttl` later, and not at all by a clock that has gone back before it was stored.
    """

    def __init__(self, *, ttl: float = 0.5) -> None:
        self._ttl = timedelta(seconds=ttl)
        self._entries: dict[str, tuple[datetime, datetime, Principal | None]] = {}
        self._lock = threading.Lock()

    def get(self, secret_hash: str, *, now: datetime) -> tuple[bool, Principal | None]:
        """(found, principal): found is False when the key must be looked up again."""
        hit = self._entries.get(secret_hash)
        if hit is None or not hit[0] <= now < hit[1]:
            return False, None
        return True, hit[2]

    def put(self, secret_hash: str, principal: Principal | None, *, now: datetime) -> None:
        with self._lock:
            if len(self._entries) > 100_000:
                self._entries.clear()
            self._entries[secret_hash] = (now, now + self._ttl, principal)
