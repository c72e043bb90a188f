"""Public ids: a type prefix, then 26 characters that sort by creation time (ULID layout).

The first ten characters are the creation millisecond: the caller's `now` where it has one
(the service's clock, so an injected clock shows in the ids), the system clock otherwise.
Within a process, the ids of one millisecond are strictly increasing: the first gets 80 random
bits, each later one the previous id plus one (ULID's monotonic mode). So ids made one after
another always sort in the order they were made, even within a millisecond, and an id made
for an earlier moment (an expiry dated when it fell due) carries that moment.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # in ASCII order, so ids sort as their values
# Every 10-bit value as two characters: 13 lookups make an id (this runs on every write).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

# The last id made for each of the latest milliseconds ids were made for: the clock's own, and
# earlier ones that may come back (an expiry's moment). Forgetting the oldest is harmless: by
# the time 1,024 other milliseconds have had ids, the clock has left that one behind.
_latest: dict[int, int] = {}
_REMEMBERED = 1_024
_lock = threading.Lock()


def new_id(prefix: str, now: datetime | None = None) -> str:
    """`prefix` + 48 bits of milliseconds + 80 bits, base32: e.g. `txn_01J…`."""
    ms = time.time_ns() // 1_000_000 if now is None else (now - _EPOCH) // _MILLISECOND
    with _lock:
        last = _latest.get(ms)
        if last is None:
            value = ms << 80 | int.from_bytes(os.urandom(10), "big")
            if len(_latest) >= _REMEMBERED:
                del _latest[next(iter(_latest))]  # the one first seen longest ago
        else:
            # The 80 bits started random: they carry into the time only if that start fell
            # within this many ids of 2**80 (odds of one in about 2**80 / ids per millisecond).
            value = last + 1
        _latest[ms] = value
    pairs = _PAIRS
    return prefix + "".join([pairs[(value >> shift) & 1023] for shift in range(120, -1, -10)])
