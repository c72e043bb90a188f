"""Public ids: a type prefix, then 26 characters that sort by creation time (ULID layout)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: URL-safe, no I/L/O/U


def new_id(prefix: str) -> str:
    """`prefix` + 48 bits of milliseconds + 80 random bits, base32: e.g. `txn_01J…`."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return prefix + "".join(reversed(chars))
