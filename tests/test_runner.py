"""The runner's retries: work the database aborted to break a lock conflict runs again, after
a pause that grows exponentially and is drawn at random (full jitter), a bounded number of times.

The pauses are recorded by an injected `sleep` and drawn by an injected `random`, so the
schedule is checked without waiting for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tally.domain import Profile
from tally.errors import Unavailable
from tally.maintenance import run_async
from tally.ports import Conflict, Store, Tx
from tally.service.runner import ATTEMPTS, Backoff, Runner
from tally.storage.sqlite import SqliteStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)


class Pauses:
    """An injected `sleep` that records how long it was asked to wait, and waits not at all."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


def conflicting(times: int, then: Callable[[Tx], object]) -> Callable[[Tx], object]:
    """Work that the database aborts `times` times (as a deadlock would), then does `then`."""
    calls = 0

    def work(tx: Tx) -> object:
        nonlocal calls
        calls += 1
        if calls <= times:
            raise Conflict("deadlock detected")
        return then(tx)

    return work


@pytest.mark.parametrize(
    ("backoff", "pauses"),
    [
        # The longest pause the jitter can draw: 2 ms, doubling.
        (Backoff(jitter=lambda: 1.0), [0.002, 0.004, 0.008, 0.016]),
        # Full jitter: a fraction of that, drawn afresh before every retry.
        (Backoff(jitter=lambda: 0.25), [0.0005, 0.001, 0.002, 0.004]),
        (Backoff(jitter=lambda: 0.0), [0.0, 0.0, 0.0, 0.0]),
        # Capped.
        (Backoff(first=0.002, cap=0.005, jitter=lambda: 1.0), [0.002, 0.004, 0.005, 0.005]),
    ],
)
def test_retries_pause_exponentially_with_full_jitter_and_give_up_after_the_last_attempt(
    store: Store, backoff: Backoff, pauses: list[float]
) -> None:
    sleep = Pauses()
    runner = Runner(store, backoff=backoff, sleep=sleep)
    work = conflicting(ATTEMPTS, lambda tx: tx.programs.count())
    with pytest.raises(Unavailable):
        run_async(store, lambda: runner.write(work))
    assert ATTEMPTS == 5
    assert sleep.asked == pytest.approx(pauses)


def test_work_that_succeeds_on_a_retry_paused_once_per_conflict_and_took_effect_once(
    store: Store,
) -> None:
    program_id = store.transact(lambda tx: tx.programs.ensure("p", now=NOW)).id
    sleep = Pauses()
    runner = Runner(store, backoff=Backoff(jitter=lambda: 0.5), sleep=sleep)
    work = conflicting(2, lambda tx: tx.members.insert(program_id, Profile("m"), now=NOW))
    assert run_async(store, lambda: runner.write(work)) is True
    assert sleep.asked == pytest.approx([0.001, 0.002])
    assert store.transact(lambda tx: tx.members.count(program_id)) == 1


def test_jitter_draws_uniformly_below_the_exponential_bound() -> None:
    backoff = Backoff()
    for retry, bound in [(1, 0.002), (2, 0.004), (3, 0.008), (4, 0.016), (20, backoff.cap)]:
        drawn = [backoff.pause(retry) for _ in range(200)]
        assert all(0 <= pause <= bound for pause in drawn)
        assert len(set(drawn)) > 100  # random, not a fixed step


def test_two_transactions_that_deadlock_both_commit_thanks_to_the_retry(store: Store) -> None:
    """Two writes lock members a and b in opposite orders (real row locks, real PostgreSQL):
    the database aborts one of them to break the deadlock, the runner pauses once and runs it
    again, and both end up committed."""
    if isinstance(store, SqliteStore):
        pytest.skip("SQLite writers take turns on the file: they never deadlock")
    program_id = store.transact(lambda tx: tx.programs.ensure("p", now=NOW)).id
    for member_id in ("a", "b"):
        store.transact(lambda tx, m=member_id: tx.members.insert(program_id, Profile(m), now=NOW))
    both_hold_one = threading.Barrier(2, timeout=30)
    attempts: list[str] = []
    sleep = Pauses()

    def crossing(first: str, second: str) -> Callable[[Tx], bool]:
        name = f"{first}-then-{second}"

        def work(tx: Tx) -> bool:
            attempts.append(name)
            tx.members.state(program_id, first, now=NOW, lock=True)
            if attempts.count(name) == 1:
                both_hold_one.wait()  # first attempts only: each holds one lock, wants the other
            tx.members.state(program_id, second, now=NOW, lock=True)
            return tx.members.insert(program_id, Profile(name), now=NOW)

        return work

    outcomes: dict[str, object] = {}

    def run(first: str, second: str) -> None:
        # Each thread is a server of its own: its own event loop, runner and connections.
        runner = Runner(store, backoff=Backoff(jitter=lambda: 1.0), sleep=sleep)
        try:
            outcomes[first] = run_async(store, lambda: runner.write(crossing(first, second)))
        except BaseException as error:
            outcomes[first] = error
            both_hold_one.abort()

    threads = [threading.Thread(target=run, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert outcomes == {"a": True, "b": True}
    assert sorted(attempts.count(name) for name in set(attempts)) == [1, 2]
    assert sleep.asked == [0.002]  # one pause, before the one retry
    names = {"a-then-b", "b-then-a"}
    found = store.transact(lambda tx: [tx.members.get(program_id, n) for n in sorted(names)])
    assert all(member is not None for member in found)
