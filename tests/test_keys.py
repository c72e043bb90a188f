"""The verified-key cache: bounded, expiring, and never emptied by a flood of unknown keys."""

from __future__ import annotations

from tally.keys import KeyCache, Principal

GOOD = Principal("key_01GOOD", program_id=1, scope="write")
OTHER = Principal("key_01OTHER", program_id=2, scope="read")


class Ticks:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_unknown_keys_never_evicts_a_good_key() -> None:
    cache = KeyCache(ttl=60, clock=Ticks())
    cache.put("good", GOOD)
    for n in range(250_000):
        cache.put(f"unknown-{n}", None)
    assert cache.get("good") == (True, GOOD)
    assert cache.get("unknown-249999") == (True, None)


def test_each_kind_of_entry_is_bounded_and_the_oldest_goes_first() -> None:
    cache = KeyCache(ttl=60, clock=Ticks(), capacity=3, unknown_capacity=2)
    for n in range(5):
        cache.put(f"good-{n}", GOOD)
        cache.put(f"unknown-{n}", None)
    assert cache.size == 5
    assert [cache.get(f"good-{n}")[0] for n in range(5)] == [False, False, True, True, True]
    assert [cache.get(f"unknown-{n}")[0] for n in range(5)] == [False, False, False, True, True]


def test_an_entry_put_again_is_the_newest() -> None:
    cache = KeyCache(ttl=60, clock=Ticks(), capacity=2)
    cache.put("a", GOOD)
    cache.put("b", GOOD)
    cache.put("a", GOOD)
    cache.put("c", GOOD)
    assert (cache.get("a")[0], cache.get("b")[0], cache.get("c")[0]) == (True, False, True)


def test_an_entry_expires_after_its_ttl() -> None:
    ticks = Ticks()
    cache = KeyCache(ttl=0.5, clock=ticks)
    cache.put("good", GOOD)
    cache.put("unknown", None)
    ticks.now += 0.499
    assert (cache.get("good"), cache.get("unknown")) == ((True, GOOD), (True, None))
    ticks.now += 0.001
    assert (cache.get("good"), cache.get("unknown")) == ((False, None), (False, None))


def test_a_key_found_revoked_replaces_what_was_cached() -> None:
    cache = KeyCache(ttl=60, clock=Ticks())
    cache.put("key", GOOD)
    cache.put("key", None)
    assert cache.get("key") == (True, None)
    cache.put("key", OTHER)
    assert cache.get("key") == (True, OTHER)
    assert cache.size == 1


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache = KeyCache(ttl=0, clock=Ticks())
    cache.put("good", GOOD)
    assert cache.get("good") == (False, None)
