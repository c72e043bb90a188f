"""Public ids are prefixed, URL-safe and sort by creation time."""

from __future__ import annotations

import re
import time

from tally.ids import new_id


def test_an_id_is_its_prefix_and_26_crockford_characters() -> None:
    assert re.fullmatch(r"txn_[0-9A-HJKMNP-TV-Z]{26}", new_id("txn_"))


def test_ids_made_in_later_milliseconds_sort_later() -> None:
    made = []
    for _ in range(5):
        made.append(new_id("txn_"))
        start = time.monotonic_ns()
        while time.monotonic_ns() - start < 2_000_000:  # step past the current millisecond
            pass
    assert made == sorted(made)
    assert len(set(made)) == 5


def test_ids_are_unique_within_one_millisecond() -> None:
    assert len({new_id("red_") for _ in range(10_000)}) == 10_000
