"""Public ids: a type prefix, then 26 characters that sort by creation time (ULID layout)."""

from __future__ import annotations

import base64
import os
import time

# RFC 4648 base32 and Crockford's alphabet list their 32 symbols in the same value order, and
# Crockford's is also in ASCII order, so translating one to the other keeps ids sortable.
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def new_id(prefix: str) -> str:
    """`prefix` + 48 bits of milliseconds + 80 random bits, base32: e.g. `txn_01J…`."""
    # 32 zero bits in front make 160 bits, 32 characters; the last 26 are the ULID (whose
    # 130 bits start with two zero bits, so ids begin with 0-7).
    raw = bytes(4) + (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)
    return prefix + base64.b32encode(raw)[6:].translate(_TO_CROCKFORD).decode()
