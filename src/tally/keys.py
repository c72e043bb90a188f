"""API keys: made with a recognisable prefix and enough randomness; stored only as a hash.

SHA-256 is the right hash here, not a slow password hash: a key carries 256 random bits, so
there is nothing to brute-force, and verification must be cheap on every request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

KEY_PREFIX = "tally_"
V = TypeVar("V")
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

    Unknown keys are cached too (as None), so a flood of bad keys costs no database reads. The
    two kinds are kept apart, each bounded and each forgetting its oldest entry first: every
    entry lives `ttl` from when it was put, so the oldest is the first to expire, and a flood of
    unknown keys can only push out other unknown keys, never a good one. Time is passed in (the
    service's clock): an entry is trusted from when it was stored until `ttl` later, and not at
    all by a clock that has gone back before it was stored.
    """

    def __init__(
        self, *, ttl: float = 0.5, capacity: int = 100_000, unknown_capacity: int = 100_000
    ) -> None:
        self._ttl = timedelta(seconds=ttl)
        self._known: OrderedDict[str, tuple[datetime, datetime, Principal]] = OrderedDict()
        self._unknown: OrderedDict[str, tuple[datetime, datetime]] = OrderedDict()
        self._capacity = capacity
        self._unknown_capacity = unknown_capacity
        self._lock = threading.Lock()

    def get(self, secret_hash: str, *, now: datetime) -> tuple[bool, Principal | None]:
        """(found, principal): found is False when the key must be looked up again."""
        known = self._known.get(secret_hash)
        if known is not None:
            return (True, known[2]) if known[0] <= now < known[1] else (False, None)
        unknown = self._unknown.get(secret_hash)
        if unknown is not None and unknown[0] <= now < unknown[1]:
            return True, None
        return False, None

    def put(self, secret_hash: str, principal: Principal | None, *, now: datetime) -> None:
        until = now + self._ttl
        with self._lock:
            # A key found revoked (or valid again) leaves the other table.
            self._known.pop(secret_hash, None)
            self._unknown.pop(secret_hash, None)
            if principal is None:
                self._unknown[secret_hash] = (now, until)
                _keep_newest(self._unknown, self._unknown_capacity)
            else:
                self._known[secret_hash] = (now, until, principal)
                _keep_newest(self._known, self._capacity)

    @property
    def size(self) -> int:
        """How many keys are cached, good and unknown. (Not `__len__`: an empty cache must
        not be falsy, `Ledger` takes `key_cache or KeyCache()`.)"""
        return len(self._known) + len(self._unknown)


def _keep_newest(table: OrderedDict[str, V], limit: int) -> None:
    """Forget the oldest entries of `table` beyond `limit` (the first to expire)."""
    while len(table) > limit:
        table.popitem(last=False)
