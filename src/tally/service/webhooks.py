"""Use cases of webhooks: endpoints (create, list, change, delete, rotate the secret), the
delivery log with manual retry and recovery, and the dispatcher's units of work (fan-out, claim,
record), each its own transaction.

Deliveries are made lazily from the events feed: an endpoint keeps a cursor in its program's
feed, starting at the feed's head when it is created (events from before are not sent), and
`fan_out` turns the events after it into deliveries and moves it in one transaction, with the
endpoint's row locked, so a crash can neither lose nor repeat a fan-out. An endpoint already
`BACKLOG` deliveries behind is not fanned out until it catches up (the outbox holds the rest). A
disabled endpoint's cursor moves on without deliveries: events while it is disabled are not sent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

from tally import ids
from tally.commands import EndpointChanges, EndpointDraft, Idempotency, Listing, Reply, Requeued
from tally.delivery import addresses, signing
from tally.delivery.sender import AttemptResult
from tally.domain import Delivery, DeliveryStatus, Page, WebhookEndpoint
from tally.errors import NotFound, invalid
from tally.ports import AttemptOutcome, ClaimedAttempt, Tx
from tally.rules import webhooks as rules
from tally.service.outbox import EVENT_TYPES
from tally.service.runner import Render, Runner

BACKLOG = 500
"""Pending deliveries an enabled endpoint may have before its fan-out waits for it: the rest of
a burst stays in the outbox (the events table) until the receiver has caught up."""


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    """How this process treats endpoints: whether private addresses are allowed, the retry
    schedule (seconds before each attempt) and how long events and finished deliveries stay."""

    allow_private: bool = False
    schedule: tuple[float, ...] = rules.DEFAULT_SCHEDULE
    retention: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Attempt:
    """A claimed attempt, ready to send: where, what, and its signed headers."""

    claimed: ClaimedAttempt
    url: str
    body: str | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Turn:
    """What a dispatcher's turn did: the outcomes it recorded (succeeded, retried, failed),
    and the attempts it claimed."""

    outcomes: list[str]
    attempts: list[Attempt]


class Webhooks:
    def __init__(
        self,
        runner: Runner,
        *,
        policy: WebhookPolicy = WebhookPolicy(),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._runner = runner
        self.policy = policy
        self._jitter = jitter

    def clock(self) -> datetime:
        return self._runner.clock()

    # Endpoints

    async def create(
        self,
        program_id: int,
        draft: EndpointDraft,
        *,
        idempotency: Idempotency | None,
        render: Render[WebhookEndpoint],
    ) -> Reply:
        url = await self._checked_url(draft.url)
        events = rules.checked_events(draft.events, known=EVENT_TYPES)

        def effect(tx: Tx, now: datetime) -> WebhookEndpoint:
            endpoint = WebhookEndpoint(
                id=ids.new_id("we_", now),
                program_id=program_id,
                url=url,
                events=events,
                description=draft.description,
                enabled=True,
                secret=signing.new_secret(),
                previous_secret=None,
                previous_secret_expires_at=None,
                cursor=tx.events.head(program_id) or (-1, -1),
                failing_since=None,
                created_at=now,
                updated_at=now,
            )
            tx.webhooks.insert_endpoint(endpoint)
            return endpoint

        return await self._runner.change(program_id, idempotency, effect, render)

    async def get(self, program_id: int, endpoint_id: str) -> WebhookEndpoint:
        def read(tx: Tx, now: datetime, writable: bool) -> WebhookEndpoint:
            return _endpoint_or_raise(tx, program_id, endpoint_id)

        return await self._runner.view_one(read)

    async def listing(self, program_id: int, page: Page) -> Listing[WebhookEndpoint]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[WebhookEndpoint]:
            rows = tx.webhooks.list_endpoints(program_id, offset=page.offset, limit=page.size)
            return Listing(rows, tx.webhooks.count_endpoints(program_id), page)

        return await self._runner.view(read)

    async def update(
        self, program_id: int, endpoint_id: str, changes: EndpointChanges
    ) -> WebhookEndpoint:
        url = None if changes.url is None else await self._checked_url(changes.url)
        events = (
            None
            if changes.events is None
            else rules.checked_events(changes.events, known=EVENT_TYPES)
        )

        def work(tx: Tx) -> WebhookEndpoint:
            now = self._runner.clock()
            endpoint = _endpoint_or_raise(tx, program_id, endpoint_id, lock=True)
            enabled = endpoint.enabled if changes.enabled is None else changes.enabled
            changed = replace(
                endpoint,
                url=url or endpoint.url,
                events=events or endpoint.events,
                description=changes.description
                if changes.description_set
                else endpoint.description,
                enabled=enabled,
                # Re-enabled: its five days of failures start again from the next one.
                failing_since=None if enabled and not endpoint.enabled else endpoint.failing_since,
                updated_at=now,
            )
            tx.webhooks.update_endpoint(changed)
            return changed

        return await self._runner.write(work)

    async def delete(self, program_id: int, endpoint_id: str) -> WebhookEndpoint:
        def work(tx: Tx) -> WebhookEndpoint:
            endpoint = _endpoint_or_raise(tx, program_id, endpoint_id, lock=True)
            tx.webhooks.delete_endpoint(endpoint.id)
            return endpoint

        return await self._runner.write(work)

    async def rotate_secret(
        self,
        program_id: int,
        endpoint_id: str,
        *,
        idempotency: Idempotency | None,
        render: Render[WebhookEndpoint],
    ) -> Reply:
        """A new secret; the one it replaces keeps signing beside it for 24 hours (a secret
        older than that, from an earlier rotation, stops at once)."""

        def effect(tx: Tx, now: datetime) -> WebhookEndpoint:
            endpoint = _endpoint_or_raise(tx, program_id, endpoint_id, lock=True)
            rotated = replace(
                endpoint,
                secret=signing.new_secret(),
                previous_secret=endpoint.secret,
                previous_secret_expires_at=now + rules.ROTATION_OVERLAP,
                updated_at=now,
            )
            tx.webhooks.update_endpoint(rotated)
            return rotated

        return await self._runner.change(program_id, idempotency, effect, render)

    # The delivery log

    async def deliveries(
        self, program_id: int, endpoint_id: str, status: DeliveryStatus | None, page: Page
    ) -> Listing[Delivery]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Delivery]:
            endpoint = _endpoint_or_raise(tx, program_id, endpoint_id)
            rows = tx.webhooks.list_deliveries(
                endpoint.id, status, offset=page.offset, limit=page.size
            )
            return Listing(rows, tx.webhooks.count_deliveries(endpoint.id, status), page)

        return await self._runner.view(read)

    async def retry(
        self,
        program_id: int,
        endpoint_id: str,
        delivery_id: str,
        *,
        idempotency: Idempotency | None,
        render: Render[Delivery],
    ) -> Reply:
        """Queue one delivery again, due now, whatever its status; its schedule restarts."""

        def effect(tx: Tx, now: datetime) -> Delivery:
            endpoint = _endpoint_or_raise(tx, program_id, endpoint_id, lock=True)
            if tx.webhooks.get_delivery(endpoint.id, delivery_id) is None:
                raise NotFound(f"Delivery {delivery_id} does not exist.")
            tx.webhooks.requeue(endpoint.id, delivery_id=delivery_id, failed_since=None, now=now)
            found = tx.webhooks.get_delivery(endpoint.id, delivery_id)
            assert found is not None
            return found

        return await self._runner.change(program_id, idempotency, effect, render)

    async def recover(
        self,
        program_id: int,
        endpoint_id: str,
        since: datetime,
        *,
        idempotency: Idempotency | None,
        render: Render[Requeued],
    ) -> Reply:
        """Queue again every failed delivery made since `since`."""

        def effect(tx: Tx, now: datetime) -> Requeued:
            endpoint = _endpoint_or_raise(tx, program_id, endpoint_id, lock=True)
            count = tx.webhooks.requeue(endpoint.id, delivery_id=None, failed_since=since, now=now)
            return Requeued(count)

        return await self._runner.change(program_id, idempotency, effect, render)

    # The dispatcher's units of work

    async def fan_out(self, *, batch: int = BACKLOG, endpoints: int = 100) -> int:
        """Turn new events into deliveries for up to `endpoints` endpoints, at most `batch`
        events each; return how many events were taken (work is left if it equals a batch)."""
        lagging = await self._runner.store.lookup(
            lambda tx: tx.webhooks.lagging_endpoints(limit=endpoints, backlog=BACKLOG)
        )
        taken = 0
        for endpoint_id in lagging:
            taken += await self._runner.write(partial(self._fan_out_one, endpoint_id, batch))
        return taken

    def _fan_out_one(self, endpoint_id: str, batch: int, tx: Tx) -> int:
        endpoint = tx.webhooks.lock_for_fan_out(endpoint_id)
        if endpoint is None:
            return 0  # deleted, or another dispatcher is fanning it out right now
        found = tx.events.after(endpoint.program_id, endpoint.cursor, limit=batch)
        if not found:
            return 0
        now = self._runner.clock()
        if endpoint.enabled:
            tx.webhooks.insert_deliveries(
                [
                    Delivery(
                        id=ids.new_id("dlv_", now),
                        endpoint_id=endpoint.id,
                        event_id=event.id,
                        event_type=event.type,
                        status=DeliveryStatus.PENDING,
                        attempts=0,
                        requeued_at_attempt=0,
                        next_attempt_at=now,
                        last_status_code=None,
                        last_error=None,
                        created_at=now,
                        updated_at=now,
                    )
                    for _, event in found
                    if rules.takes(endpoint.events, event.type)
                ]
            )
        tx.webhooks.set_cursor(endpoint.id, found[-1][0])
        return len(found)

    async def turn(
        self,
        finished: Sequence[tuple[ClaimedAttempt, AttemptResult]],
        *,
        room: Callable[[str], int],
        most: int,
        lease: timedelta,
    ) -> Turn:
        """One turn of a dispatcher, in one transaction: record what came of `finished`
        attempts (and what it means for their endpoints: a success clears their failing streak,
        `410 Gone` or 5 days of failures disables them), then lease up to `most` due
        deliveries, at most `room(endpoint_id)` of each endpoint's, signed for sending now."""

        def work(tx: Tx) -> Turn:
            now = self._runner.clock()
            outcomes = self._record(tx, finished, now) if finished else []
            attempts: list[Attempt] = []
            if most > 0:
                for endpoint_id in tx.webhooks.due_endpoints(now=now, limit=1000):
                    free = min(room(endpoint_id), most - len(attempts))
                    if free > 0:
                        attempts += self._claim(tx, endpoint_id, free, now + lease, now)
                    if len(attempts) >= most:
                        break
            return Turn(outcomes, attempts)

        return await self._runner.write(work)

    def _claim(
        self, tx: Tx, endpoint_id: str, limit: int, lease_until: datetime, now: datetime
    ) -> list[Attempt]:
        endpoint = tx.webhooks.endpoint_by_id(endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return []
        claimed = tx.webhooks.claim(endpoint_id, now=now, lease_until=lease_until, limit=limit)
        secrets = rules.signing_secrets(endpoint, now)
        return [
            Attempt(
                c,
                endpoint.url,
                c.body,
                {}
                if c.body is None
                else signing.headers(secrets, msg_id=c.event_id, now=now, body=c.body),
            )
            for c in claimed
        ]

    def _record(
        self, tx: Tx, results: Sequence[tuple[ClaimedAttempt, AttemptResult]], now: datetime
    ) -> list[str]:
        """Record attempts; return each one's outcome: succeeded, retried or failed."""
        outcomes, kinds = [], []
        for claimed, result in results:
            outcome = self._outcome(claimed, result, now)
            outcomes.append(outcome)
            if outcome.status is DeliveryStatus.PENDING:
                kinds.append("retried")
            else:
                kinds.append(outcome.status.value)
        tx.webhooks.record(outcomes, now=now)
        by_endpoint: dict[str, list[AttemptResult]] = {}
        for claimed, result in results:
            by_endpoint.setdefault(claimed.endpoint_id, []).append(result)
        for endpoint_id, seen in by_endpoint.items():
            _note_health(tx, endpoint_id, seen, now)
        return kinds

    def _outcome(
        self, claimed: ClaimedAttempt, result: AttemptResult, now: datetime
    ) -> AttemptOutcome:
        def ended(status: DeliveryStatus, error: str | None) -> AttemptOutcome:
            return AttemptOutcome(
                claimed.delivery_id, claimed.attempts, status, None, result.status_code, error
            )

        if result.succeeded:
            return ended(DeliveryStatus.SUCCEEDED, None)
        if result.gone or claimed.body is None:
            return ended(DeliveryStatus.FAILED, result.error)
        later = rules.next_attempt_at(
            self.policy.schedule,
            claimed.attempts - claimed.requeued_at_attempt,
            now,
            jitter=self._jitter(),
            retry_after=result.retry_after,
        )
        if later is None:
            return ended(DeliveryStatus.FAILED, result.error)
        return AttemptOutcome(
            claimed.delivery_id,
            claimed.attempts,
            DeliveryStatus.PENDING,
            later,
            result.status_code,
            result.error,
        )

    async def oldest_pending(self) -> datetime | None:
        return await self._runner.store.read(lambda tx: tx.webhooks.oldest_pending())

    async def _checked_url(self, url: str) -> str:
        checked = rules.checked_url(url)
        if not self.policy.allow_private:
            parts = _host_and_port(checked)
            try:
                await addresses.public_addresses(*parts)
            except addresses.RefusedAddress as refused:
                raise invalid("url", f"url is refused: {refused}.") from None
        return checked


def _host_and_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _note_health(tx: Tx, endpoint_id: str, results: list[AttemptResult], now: datetime) -> None:
    endpoint = tx.webhooks.endpoint_by_id(endpoint_id)
    if endpoint is None:
        return
    if any(r.succeeded for r in results):
        failing_since = None
        enabled = endpoint.enabled
    else:
        failing_since = rules.failing_since_after_failure(endpoint.failing_since, now)
        enabled = endpoint.enabled and not (
            any(r.gone for r in results) or rules.failed_too_long(failing_since, now)
        )
    if (failing_since, enabled) != (endpoint.failing_since, endpoint.enabled):
        tx.webhooks.update_endpoint(
            replace(endpoint, failing_since=failing_since, enabled=enabled, updated_at=now)
        )


def _endpoint_or_raise(
    tx: Tx, program_id: int, endpoint_id: str, *, lock: bool = False
) -> WebhookEndpoint:
    endpoint = tx.webhooks.get_endpoint(program_id, endpoint_id, lock=lock)
    if endpoint is None:
        raise NotFound(f"Webhook endpoint {endpoint_id} does not exist.")
    return endpoint
