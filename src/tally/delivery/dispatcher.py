"""The dispatcher: the loop that sends events to webhook endpoints, at least once.

Each turn of the loop records what finished attempts came to, fans new events out into
deliveries, and claims due deliveries for as many attempts as it has room for; each of those
is a short transaction of `tally.service.webhooks`. Attempts run as tasks, outside any
transaction, at most `per_endpoint` at a time for one endpoint and `overall` in all, so one
hanging receiver holds up only its own deliveries (and each of those for at most the timeout).

Any number of dispatchers may run on one database (one in every `tally serve` worker, and
`tally deliver`): a claim leases its deliveries for the timeout plus a margin, and on
PostgreSQL skips rows another claim holds, so each attempt is made by one of them. A dispatcher
killed mid-attempt leaves its leases to run out; the deliveries are then attempted again, which
is what makes delivery at least once and not exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from tally.delivery.sender import AttemptResult, Sender
from tally.ports import ClaimedAttempt
from tally.service.webhooks import Attempt, Webhooks

log = logging.getLogger("tally.webhooks")

LEASE_MARGIN = 5.0
"""Seconds a lease outlives an attempt's timeout: time to record the outcome. A process killed
mid-attempt delays that attempt's retry by the timeout plus this."""


PACE = 0.02
"""Seconds between two busy turns of `run`'s loop: at most 50 transactions a second, each
recording and claiming up to `per_endpoint` attempts per endpoint (up to 400 a second to one
endpoint at the default 8)."""

CROWD = 16
CROWDED_PACE = 0.1
"""While `CROWD` attempts or more are in flight, turns start at least `CROWDED_PACE` seconds
apart, busy or not (each finished attempt wakes the loop). Many endpoints delivering at once
would otherwise take a write transaction every `PACE` from the API's writers (on SQLite, its
one writer), to save each attempt a few milliseconds' wait for its record."""


class DeliveryStats:
    """What this process's dispatcher has done, for `/metrics`."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()  # succeeded, retried, failed
        self.oldest_pending_age: float | None = None  # seconds; None when nothing is pending


class Dispatcher:
    def __init__(
        self,
        webhooks: Webhooks,
        sender: Sender,
        *,
        poll_seconds: float = 0.5,
        pace_seconds: float = PACE,
        crowded_pace_seconds: float = CROWDED_PACE,
        per_endpoint: int = 8,
        overall: int = 64,
        stats: DeliveryStats | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._webhooks = webhooks
        self._sender = sender
        self._poll = poll_seconds
        self._pace = pace_seconds
        self._crowded_pace = crowded_pace_seconds
        self._per_endpoint = per_endpoint
        self._overall = overall
        self.stats = stats or DeliveryStats()
        self._monotonic = monotonic
        self._lease = timedelta(seconds=sender.timeout + LEASE_MARGIN)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: Counter[str] = Counter()  # attempts in flight, by endpoint
        self._finished: list[tuple[ClaimedAttempt, AttemptResult]] = []
        self._stats_due = 0.0
        self._turned = 0.0  # when the last turn started (`monotonic`)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (an event was just committed)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled; a failing database is logged and tried again."""
        try:
            while True:
                try:
                    busy = await self._step()
                except Exception:
                    log.exception("webhook dispatcher failed a step; will try again")
                    busy = False
                if not busy:
                    await self._idle()
                elif self._pace > 0:
                    # Busy: let attempts finish together, so one turn (one transaction) records
                    # and claims many rather than one, and the API keeps the CPU it needs.
                    await asyncio.sleep(self._pace)
                if len(self._tasks) >= CROWD:
                    await asyncio.sleep(self._turned + self._crowded_pace - self._monotonic())
        finally:
            await self.aclose()

    async def run_once(self) -> None:
        """Fan out and attempt everything due now (retries due at once included), then return."""
        try:
            while True:
                busy = await self._step()
                if not busy and not self._tasks and not self._finished:
                    return
                if not busy:
                    await self._idle()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the attempts in flight; record those that had finished. The others' leases run
        out and they are attempted again (by this process's successor or another)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._finished:
            with contextlib.suppress(Exception):
                await self._turn(claiming=False)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._poll):
                await self._wake.wait()

    async def _step(self) -> bool:
        """One turn of the loop; whether it found anything to do."""
        self._wake.clear()
        self._turned = self._monotonic()
        fanned = await self._webhooks.fan_out()
        done = await self._turn(claiming=True)
        await self._refresh_stats()
        return bool(fanned or done)

    async def _turn(self, *, claiming: bool) -> int:
        """Record the attempts that finished and claim more, in one transaction; how many of
        either there were."""
        finished, self._finished = self._finished, []
        try:
            turn = await self._webhooks.turn(
                finished,
                room=lambda endpoint_id: self._per_endpoint - self._busy[endpoint_id],
                most=self._overall - len(self._tasks) if claiming else 0,
                lease=self._lease,
            )
        except BaseException:
            self._finished = finished + self._finished  # not recorded: keep them for next time
            raise
        self.stats.outcomes.update(turn.outcomes)
        for attempt in turn.attempts:
            self._start(attempt)
        return len(finished) + len(turn.attempts)

    def _start(self, attempt: Attempt) -> None:
        endpoint_id = attempt.claimed.endpoint_id
        self._busy[endpoint_id] += 1
        task = asyncio.create_task(self._attempt(attempt))
        self._tasks.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._busy[endpoint_id] -= 1
            if self._busy[endpoint_id] <= 0:
                del self._busy[endpoint_id]
            self._wake.set()

        task.add_done_callback(done)

    async def _attempt(self, attempt: Attempt) -> None:
        if attempt.body is None:
            result = AttemptResult(None, "the event is no longer kept (retention)")
        else:
            result = await self._sender.send(
                attempt.url, body=attempt.body, headers=attempt.headers
            )
        self._finished.append((attempt.claimed, result))

    async def _refresh_stats(self) -> None:
        """The oldest pending delivery's event age, at most once a second."""
        now = self._monotonic()
        if now < self._stats_due:
            return
        self._stats_due = now + 1.0
        oldest = await self._webhooks.oldest_pending()
        clock = self._webhooks.clock()
        self.stats.oldest_pending_age = (
            None if oldest is None else max(0.0, (clock - oldest).total_seconds())
        )
