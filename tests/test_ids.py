"""Public ids are prefixed, URL-safe, carry their creation time and sort by it."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tally.ids import new_id
from tests.support import Api

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def millisecond_of(public_id: str) -> int:
    """The millisecond an id carries: the ten characters after its prefix."""
    value = 0
    for character in public_id.split("_", 1)[1][:10]:
        value = value * 32 + _CROCKFORD.index(character)
    return value


def milliseconds(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def strictly_increasing(made: list[str]) -> bool:
    return all(earlier < later for earlier, later in zip(made, made[1:], strict=False))


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


def test_ids_made_in_a_tight_loop_are_strictly_increasing() -> None:
    made = [new_id("txn_") for _ in range(20_000)]  # many to each millisecond
    assert strictly_increasing(made)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 12, 0, 0, 999_999, tzinfo=UTC),  # the millisecond, not rounded up
        datetime(2001, 9, 9, 1, 46, 40, 123_000, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ],
)
def test_an_id_made_with_an_injected_time_carries_that_time(moment: datetime) -> None:
    made = [new_id("red_", moment) for _ in range(1_000)]
    assert {millisecond_of(one) for one in made} == {milliseconds(moment)}
    assert strictly_increasing(made)


def test_ids_made_on_many_threads_at_once_are_all_different() -> None:
    start = threading.Barrier(4, timeout=30)

    def make(_: int) -> list[str]:
        start.wait()
        return [new_id("txn_") for _ in range(5_000)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        made = [one for batch in pool.map(make, range(4)) for one in batch]
    assert len(set(made)) == 20_000


def test_the_ids_the_api_makes_carry_the_services_clock(api: Api) -> None:
    """The clock the server was given (here, frozen) is the time in every id it makes."""
    assert api.clock is not None
    moment = milliseconds(api.clock())
    member_id = api.post("/v1/members", {}).json()["data"]["member_id"]
    award = api.award(member_id, 100)
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10}).json()["data"]
    redemption = api.post(
        "/v1/redemptions", {"member_id": member_id, "reward_id": reward["reward_id"]}
    ).json()["data"]
    made = [
        member_id,
        award["transaction_id"],
        reward["reward_id"],
        redemption["redemption_id"],
        redemption["transaction_id"],
    ]
    assert [millisecond_of(one) for one in made] == [moment] * 5
