"""The verified-key cache: bounded, expiring, and never emptied by a flood of unknown keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tally.keys import KeyCache, Principal

GOOD = Principal("key_01GOOD", program_id=1, scope="write")
OTHER = Principal("key_01OTHER", program_id=2, scope="read")


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_flood_of_unknown_keys_never_evicts_a_good_key() -> None:
    cache = KeyCache(ttl=60)
    cache.put("good", GOOD, now=NOW)
    for n in range(250_000):
        cache.put(f"unknown-{n}", None, now=NOW)
    assert cache.get("good", now=NOW) == (True, GOOD)
    assert cache.get("unknown-249999", now=NOW) == (True, None)


def test_each_kind_of_entry_is_bounded_and_the_oldest_goes_first() -> None:
    cache = KeyCache(ttl=60, capacity=3, unknown_capacity=2)
    for n in range(5):
        cache.put(f"good-{n}", GOOD, now=NOW)
        cache.put(f"unknown-{n}", None, now=NOW)
    assert cache.size == 5
    assert [cache.get(f"good-{n}", now=NOW)[0] for n in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    assert [cache.get(f"unknown-{n}", now=NOW)[0] for n in range(5)] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_an_entry_put_again_is_the_newest() -> None:
    cache = KeyCache(ttl=60, capacity=2)
    cache.put("a", GOOD, now=NOW)
    cache.put("b", GOOD, now=NOW)
    cache.put("a", GOOD, now=NOW)
    cache.put("c", GOOD, now=NOW)
    assert (cache.get("a", now=NOW)[0], cache.get("b", now=NOW)[0], cache.get("c", now=NOW)[0]) == (
        True,
        False,
        True,
    )


def test_an_entry_expires_after_its_ttl() -> None:
    cache = KeyCache(ttl=0.5)
    cache.put("good", GOOD, now=NOW)
    cache.put("unknown", None, now=NOW)
    almost = NOW + timedelta(milliseconds=499)
    assert (cache.get("good", now=almost), cache.get("unknown", now=almost)) == (
        (True, GOOD),
        (True, None),
    )
    late = NOW + timedelta(milliseconds=500)
    assert (cache.get("good", now=late), cache.get("unknown", now=late)) == (
        (False, None),
        (False, None),
    )


def test_a_key_found_revoked_replaces_what_was_cached() -> None:
    cache = KeyCache(ttl=60)
    cache.put("key", GOOD, now=NOW)
    cache.put("key", None, now=NOW)
    assert cache.get("key", now=NOW) == (True, None)
    cache.put("key", OTHER, now=NOW)
    assert cache.get("key", now=NOW) == (True, OTHER)
    assert cache.size == 1


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache = KeyCache(ttl=0)
    cache.put("good", GOOD, now=NOW)
    assert cache.get("good", now=NOW) == (False, None)
