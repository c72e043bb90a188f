"""Webhook endpoints and deliveries in SQL: `WebhookRows`.

An endpoint's `events` filter is stored as JSON text. Claims: on PostgreSQL the rows to lease
are picked with `FOR UPDATE SKIP LOCKED` (`Dialect.skip_locked`), so two servers claiming at
once take different rows and neither waits; on SQLite one writer at a time makes the
`UPDATE ... WHERE id IN (SELECT ... LIMIT n)` atomic by itself. Either way the lease is checked
inside the statement that takes it (`lease_until <= now`), so a row leased by a claim that
committed first is never taken again until its lease runs out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tally.domain import Delivery, DeliveryStatus, WebhookEndpoint
from tally.ports import AttemptOutcome, ClaimedAttempt
from tally.storage.sql.rows import from_micros, opt_micros, opt_time, to_micros
from tally.storage.sql.session import Session

_ENDPOINT = (
    "id, program_id, url, events, description, enabled, secret, previous_secret, "
    "previous_secret_expires_at, after_xid, after_seq, failing_since, created_at, updated_at"
)
_DELIVERY = (
    "id, endpoint_id, event_id, event_type, status, attempts, requeued_at_attempt, "
    "next_attempt_at, last_status_code, last_error, created_at, updated_at"
)
_PENDING = DeliveryStatus.PENDING.value
_FAILED = DeliveryStatus.FAILED.value


def _endpoint(r: Sequence[Any]) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=r[0],
        program_id=r[1],
        url=r[2],
        events=tuple(json.loads(r[3])),
        description=r[4],
        enabled=bool(r[5]),
        secret=r[6],
        previous_secret=r[7],
        previous_secret_expires_at=opt_time(r[8]),
        cursor=(int(r[9]), int(r[10])),
        failing_since=opt_time(r[11]),
        created_at=from_micros(r[12]),
        updated_at=from_micros(r[13]),
    )


def _delivery(r: Sequence[Any]) -> Delivery:
    return Delivery(
        id=r[0],
        endpoint_id=r[1],
        event_id=r[2],
        event_type=r[3],
        status=DeliveryStatus(r[4]),
        attempts=r[5],
        requeued_at_attempt=r[6],
        next_attempt_at=opt_time(r[7]),
        last_status_code=r[8],
        last_error=r[9],
        created_at=from_micros(r[10]),
        updated_at=from_micros(r[11]),
    )


def _status_filter(status: DeliveryStatus | None) -> tuple[str, tuple[str, ...]]:
    return ("", ()) if status is None else (" AND status = ?", (status.value,))


class SqlWebhooks:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    # Endpoints

    def insert_endpoint(self, endpoint: WebhookEndpoint) -> None:
        e = endpoint
        self._s.run(
            f"INSERT INTO webhook_endpoints ({_ENDPOINT}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.id,
                e.program_id,
                e.url,
                json.dumps(list(e.events)),
                e.description,
                e.enabled,
                e.secret,
                e.previous_secret,
                opt_micros(e.previous_secret_expires_at),
                e.cursor[0],
                e.cursor[1],
                opt_micros(e.failing_since),
                to_micros(e.created_at),
                to_micros(e.updated_at),
            ),
        )

    def get_endpoint(
        self, program_id: int, endpoint_id: str, *, lock: bool = False
    ) -> WebhookEndpoint | None:
        suffix = self._s.dialect.for_update if lock else ""
        row = self._s.one(
            f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE id = ? AND program_id = ?{suffix}",
            (endpoint_id, program_id),
        )
        return None if row is None else _endpoint(row)

    def list_endpoints(self, program_id: int, *, offset: int, limit: int) -> list[WebhookEndpoint]:
        rows = self._s.all(
            f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE program_id = ? "
            "ORDER BY created_at, id LIMIT ? OFFSET ?",
            (program_id, limit, offset),
        )
        return [_endpoint(r) for r in rows]

    def count_endpoints(self, program_id: int) -> int:
        row = self._s.one(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE program_id = ?", (program_id,)
        )
        return int(row[0])

    def update_endpoint(self, endpoint: WebhookEndpoint) -> None:
        e = endpoint
        self._s.run(
            "UPDATE webhook_endpoints SET url = ?, events = ?, description = ?, enabled = ?, "
            "secret = ?, previous_secret = ?, previous_secret_expires_at = ?, "
            "failing_since = ?, updated_at = ? WHERE id = ?",
            (
                e.url,
                json.dumps(list(e.events)),
                e.description,
                e.enabled,
                e.secret,
                e.previous_secret,
                opt_micros(e.previous_secret_expires_at),
                opt_micros(e.failing_since),
                to_micros(e.updated_at),
                e.id,
            ),
        )

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._s.run("DELETE FROM webhook_deliveries WHERE endpoint_id = ?", (endpoint_id,))
        self._s.run("DELETE FROM webhook_endpoints WHERE id = ?", (endpoint_id,))

    # The delivery log

    def get_delivery(self, endpoint_id: str, delivery_id: str) -> Delivery | None:
        row = self._s.one(
            f"SELECT {_DELIVERY} FROM webhook_deliveries WHERE id = ? AND endpoint_id = ?",
            (delivery_id, endpoint_id),
        )
        return None if row is None else _delivery(row)

    def list_deliveries(
        self, endpoint_id: str, status: DeliveryStatus | None, *, offset: int, limit: int
    ) -> list[Delivery]:
        where, params = _status_filter(status)
        rows = self._s.all(
            f"SELECT {_DELIVERY} FROM webhook_deliveries WHERE endpoint_id = ?{where} "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
            (endpoint_id, *params, limit, offset),
        )
        return [_delivery(r) for r in rows]

    def count_deliveries(self, endpoint_id: str, status: DeliveryStatus | None) -> int:
        where, params = _status_filter(status)
        row = self._s.one(
            f"SELECT COUNT(*) FROM webhook_deliveries WHERE endpoint_id = ?{where}",
            (endpoint_id, *params),
        )
        return int(row[0])

    def requeue(
        self,
        endpoint_id: str,
        *,
        delivery_id: str | None,
        failed_since: datetime | None,
        now: datetime,
    ) -> int:
        params: tuple[Any, ...]
        if delivery_id is not None:
            which, params = " AND id = ?", (delivery_id,)
        else:
            assert failed_since is not None
            which, params = (
                " AND status = ? AND created_at >= ?",
                (
                    _FAILED,
                    to_micros(failed_since),
                ),
            )
        found = self._s.all(
            "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, "
            "requeued_at_attempt = attempts, updated_at = ? "
            f"WHERE endpoint_id = ?{which} RETURNING id",
            (_PENDING, to_micros(now), to_micros(now), endpoint_id, *params),
        )
        return len(found)

    # The dispatcher's

    def endpoint_by_id(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self._s.one(f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE id = ?", (endpoint_id,))
        return None if row is None else _endpoint(row)

    def lagging_endpoints(self, *, limit: int, backlog: int) -> list[str]:
        # An enabled endpoint with `backlog` deliveries pending waits: the events stay in the
        # outbox until it has caught up, so that a burst of writes is not paid for twice, as
        # events and at once as deliveries, while the receiver is still behind.
        # Events after the cursor: two index ranges, as in `SqlEvents.after`.
        horizon, bound = self._s.feed_horizon()
        rows = self._s.all(
            "SELECT w.id FROM webhook_endpoints w WHERE (EXISTS (SELECT 1 FROM events e "
            "WHERE e.program_id = w.program_id AND e.commit_xid = w.after_xid "
            "AND e.seq > w.after_seq) OR EXISTS (SELECT 1 FROM events e "
            "WHERE e.program_id = w.program_id AND e.commit_xid > w.after_xid "
            f"AND e.commit_xid < {horizon})) "
            "AND (w.enabled = ? OR NOT EXISTS (SELECT 1 FROM webhook_deliveries d "
            "WHERE d.endpoint_id = w.id AND d.status = ? LIMIT 1 OFFSET ?)) LIMIT ?",
            (*bound, False, _PENDING, backlog - 1, limit),
        )
        return [r[0] for r in rows]

    def lock_for_fan_out(self, endpoint_id: str) -> WebhookEndpoint | None:
        row = self._s.one(
            f"SELECT {_ENDPOINT} FROM webhook_endpoints WHERE id = ?{self._s.dialect.skip_locked}",
            (endpoint_id,),
        )
        return None if row is None else _endpoint(row)

    def set_cursor(self, endpoint_id: str, cursor: tuple[int, int]) -> None:
        self._s.run(
            "UPDATE webhook_endpoints SET after_xid = ?, after_seq = ? WHERE id = ?",
            (cursor[0], cursor[1], endpoint_id),
        )

    def insert_deliveries(self, deliveries: list[Delivery]) -> None:
        self._s.run_many(
            f"INSERT INTO webhook_deliveries ({_DELIVERY}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            [
                (
                    d.id,
                    d.endpoint_id,
                    d.event_id,
                    d.event_type,
                    d.status.value,
                    d.attempts,
                    d.requeued_at_attempt,
                    opt_micros(d.next_attempt_at),
                    d.last_status_code,
                    d.last_error,
                    to_micros(d.created_at),
                    to_micros(d.updated_at),
                )
                for d in deliveries
            ],
        )

    def due_endpoints(self, *, now: datetime, limit: int) -> list[str]:
        at = to_micros(now)
        rows = self._s.all(
            "SELECT w.id FROM webhook_endpoints w WHERE w.enabled = ? AND EXISTS ("
            "SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = w.id AND d.status = ? "
            "AND d.next_attempt_at <= ? AND d.lease_until <= ?) LIMIT ?",
            (True, _PENDING, at, at, limit),
        )
        return [r[0] for r in rows]

    def claim(
        self, endpoint_id: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedAttempt]:
        at = to_micros(now)
        claimed = self._s.all(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until = ?, "
            "updated_at = ? WHERE id IN (SELECT id FROM webhook_deliveries "
            "WHERE endpoint_id = ? AND status = ? AND next_attempt_at <= ? AND lease_until <= ? "
            f"ORDER BY next_attempt_at, id LIMIT ?{self._s.dialect.skip_locked}) "
            "RETURNING id, event_id, attempts, requeued_at_attempt",
            (to_micros(lease_until), at, endpoint_id, _PENDING, at, at, limit),
        )
        if not claimed:
            return []
        event_ids = [r[1] for r in claimed]
        bodies = dict(
            self._s.all(
                f"SELECT id, body FROM events WHERE id IN ({', '.join('?' * len(event_ids))})",
                event_ids,
            )
        )
        found = [
            ClaimedAttempt(r[0], endpoint_id, r[1], int(r[2]), int(r[3]), bodies.get(r[1]))
            for r in claimed
        ]
        found.sort(key=lambda c: c.delivery_id)
        return found

    def record(self, outcomes: list[AttemptOutcome], *, now: datetime) -> None:
        self._s.run_many(
            "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, lease_until = 0, "
            "last_status_code = ?, last_error = ?, updated_at = ? WHERE id = ? AND attempts = ?",
            [
                (
                    o.status.value,
                    opt_micros(o.next_attempt_at),
                    o.status_code,
                    o.error,
                    to_micros(now),
                    o.delivery_id,
                    o.attempts,
                )
                for o in outcomes
            ],
        )

    def oldest_pending(self) -> datetime | None:
        # The event of the delivery pending longest (one index entry, not every pending row).
        row = self._s.one(
            "SELECT e.created_at FROM webhook_deliveries d JOIN events e ON e.id = d.event_id "
            "WHERE d.status = ? ORDER BY d.created_at LIMIT 1",
            (_PENDING,),
        )
        return None if row is None or row[0] is None else from_micros(row[0])

    def purge(self, *, before: datetime) -> int:
        found = self._s.all(
            "DELETE FROM webhook_deliveries WHERE status <> ? AND updated_at < ? RETURNING id",
            (_PENDING, to_micros(before)),
        )
        return len(found)
