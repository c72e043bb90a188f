"""The runner: the one path every use case takes to the store.

It owns what every feature shares: the clock, the unit of work handed to the store, retries of
work the database aborted to break a lock conflict, and Idempotency-Keys (a change's reply is
stored under its key in the same commit as the change). Feature modules (`members`, `points`,
...) say what a use case does; they never open, commit or retry a transaction themselves.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from tally.commands import Clock, Idempotency, Reply
from tally.errors import IdempotencyInProgress, IdempotencyKeyReused, Unavailable
from tally.ports import Conflict, Store, StoredReply, Tx

T = TypeVar("T")
R = TypeVar("R")

IDEMPOTENCY_RETENTION = timedelta(hours=24)
ATTEMPTS = 5  # tries of one unit of work that the database keeps aborting for lock conflicts

Render = Callable[[R], tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before running aborted work again: exponential, with full jitter.

    Before retry `n` (1, 2, ...) the wait is drawn uniformly from [0, min(cap, first * 2**(n-1))):
    two transactions aborted by the same deadlock do not collide again in lockstep, and the
    waits stay a few milliseconds (the longest of the four retries is at most 16 ms).
    """

    first: float = 0.002
    cap: float = 0.05
    jitter: Callable[[], float] = random.random  # a fraction in [0, 1), drawn per retry

    def pause(self, retry: int) -> float:
        return self.jitter() * min(self.cap, self.first * 2.0 ** (retry - 1))


class Due(Exception):
    """Raised inside a read when the member has work due: the read is retried as a write."""


def system_clock() -> datetime:
    return datetime.now(UTC)


class Runner:
    """Runs units of work on one store with one clock (one per server process or command)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        backoff: Backoff = Backoff(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.clock = clock
        self._backoff = backoff
        self._sleep = sleep
        self._inflight: set[tuple[int, str]] = set()

    async def write(
        self, work: Callable[[Tx], T], *, in_thread: bool = False, lane: Hashable | None = None
    ) -> T:
        """Run `work` as one atomic, durable write; again, after a short random pause, if the
        database aborted it to break a lock conflict (at most `ATTEMPTS` runs in all).

        `in_thread`: the work is long enough to stall the event loop (a 10,000-item bulk award
        takes hundreds of milliseconds of CPU; on the loop every other request would wait for
        it): where the store says so (`Store.long_work_in_thread`), it runs on a worker thread
        in a transaction of its own (`Store.transact`). `lane`: as for `Store.write`.
        """
        in_thread = in_thread and self.store.long_work_in_thread
        for attempt in range(1, ATTEMPTS + 1):
            try:
                if in_thread:
                    return await asyncio.to_thread(self.store.transact, work)
                return await self.store.write(work, lane=lane)
            except Conflict:
                if attempt == ATTEMPTS:
                    raise Unavailable(
                        "The database is busy; nothing was changed. Please retry."
                    ) from None
            await self._sleep(self._backoff.pause(attempt))
        raise AssertionError("unreachable")

    async def change(
        self,
        program_id: int,
        idempotency: Idempotency | None,
        effect: Callable[[Tx, datetime], R],
        render: Render[R],
        *,
        in_thread: bool = False,
        lane: Hashable | None = None,
    ) -> Reply:
        """Apply `effect` once: its reply is stored under the Idempotency-Key in the same commit,
        and a retry with the key gets that reply back instead of a second effect. `in_thread`:
        as for `write`. `lane`: the one member the change locks, if so (`Store.write`)."""
        marker = None if idempotency is None else (program_id, idempotency.key)
        if marker is not None:
            if marker in self._inflight:
                raise IdempotencyInProgress(_in_progress(idempotency))
            self._inflight.add(marker)

        def work(tx: Tx) -> Reply:
            now = self.clock()
            if idempotency is not None:
                replayed = _stored_reply(tx, program_id, idempotency)
                if replayed is not None:
                    return replayed
            status, body = render(effect(tx, now))
            if idempotency is not None:
                reply = StoredReply(idempotency.fingerprint, status, body)
                tx.replies.put(program_id, idempotency.key, reply, now=now)
            return Reply(status, body)

        try:
            return await self.write(work, in_thread=in_thread, lane=lane)
        finally:
            if marker is not None:
                self._inflight.discard(marker)

    async def view(self, read: Callable[[Tx, datetime, bool], T]) -> T:
        """Run a read; if it finds a member with work due, run it again as a write.

        `read(tx, now, writable)` may raise `Due` when `writable` is False.
        """
        try:
            return await self.store.read(lambda tx: read(tx, self.clock(), False))
        except Due:
            return await self.write(lambda tx: read(tx, self.clock(), True))

    async def view_one(self, read: Callable[[Tx, datetime, bool], T]) -> T:
        """`view` for a read that is one statement when nothing is due (`Store.lookup`)."""
        try:
            return await self.store.lookup(lambda tx: read(tx, self.clock(), False))
        except Due:
            return await self.write(lambda tx: read(tx, self.clock(), True))


def _stored_reply(tx: Tx, program_id: int, idempotency: Idempotency) -> Reply | None:
    """The reply already stored under the key, or None; raises if the key is busy or reused."""
    if not tx.replies.claim(program_id, idempotency.key):
        raise IdempotencyInProgress(_in_progress(idempotency))
    stored = tx.replies.get(program_id, idempotency.key)
    if stored is None:
        return None
    if stored.fingerprint != idempotency.fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {idempotency.key!r} was already used for a different request."
        )
    return Reply(stored.status, stored.body, replayed=True)


def _in_progress(idempotency: Idempotency | None) -> str:
    key = "" if idempotency is None else f" {idempotency.key!r}"
    return f"A request with Idempotency-Key{key} is still in progress; retry shortly."
