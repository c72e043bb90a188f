"""Public ids: a type prefix, then 26 characters that sort by creation time (ULID layout)."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # in ASCII order, so ids sort as their values
# Every 10-bit value as two characters: 13 lookups make an id (this runs on every write).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]


def new_id(prefix: str) -> str:
    """`prefix` + 48 bits of milliseconds + 80 random bits, base32: e.g. `txn_01J…`."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return prefix + "".join([pairs[(value >> shift) & 1023] for shift in range(120, -1, -10)])
