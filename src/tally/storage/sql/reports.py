"""`ReportRows` in SQL: balance checkpoints and the reads of a balance at a past moment; the
program report's running totals (`report_days`) and its reads.

A member's entries take effect in ledger order (`seq`), at non-decreasing times, so the entries
that had taken effect by a moment are a prefix of the ledger. The latest checkpoint at or before
the moment covers most of it; the entries up to the next checkpoint (at most 256) cover the rest.
"""

from __future__ import annotations

from datetime import datetime

from tally.domain import Account
from tally.ports import PastRows
from tally.storage.sql.rows import NEVER, from_micros, to_micros
from tally.storage.sql.session import Session

DAY = 86_400_000_000  # microseconds
# The UTC day an entry took effect on, as the microseconds of its midnight (times are positive).
_DAY = f"(effective_at / {DAY}) * {DAY}"
_COUNTERS = (
    "balance, lifetime_earned, lifetime_redeemed, lifetime_deducted, lifetime_expired, "
    "lifetime_transferred_in, lifetime_transferred_out"
)
_LATEST_CHECKPOINT = (
    f"SELECT seq, {_COUNTERS} FROM balance_checkpoints WHERE member_pk = ? AND at <= ? "
    "ORDER BY at DESC, seq DESC LIMIT 1"
)
# The entries after the latest checkpoint at or before the moment, up to the next checkpoint,
# that had taken effect by then. The bounds are sub-selects, so this statement goes out with the
# checkpoint's and the pending one before any answer is read (one round trip on PostgreSQL).
_ENTRIES_AFTER = (
    "SELECT type, points, seq FROM entries WHERE member_pk = ? AND seq > COALESCE(("
    "SELECT seq FROM balance_checkpoints WHERE member_pk = ? AND at <= ? "
    "ORDER BY at DESC, seq DESC LIMIT 1), 0) AND seq <= COALESCE(("
    "SELECT seq FROM balance_checkpoints WHERE member_pk = ? AND at > ? "
    "ORDER BY at, seq LIMIT 1), ?) AND status = 'posted' AND effective_at <= ? ORDER BY seq"
)
# An award was pending from its creation until it became available (when it posted) or until it
# was cancelled; `available_at > created_at` is the partial index entries_member_held.
_PENDING_AT = (
    "SELECT COALESCE(SUM(points), 0) FROM entries WHERE member_pk = ? "
    "AND available_at > created_at AND available_at > ? AND created_at <= ? "
    "AND (cancelled_at IS NULL OR cancelled_at > ?)"
)
# What each lot held at the moment: its points less what the spends up to `last_seq` drew.
_SOONEST_EXPIRY_AT = (
    "SELECT expires_at, SUM(held) FROM (SELECT l.expires_at, l.points - COALESCE(("
    "SELECT SUM(d.points) FROM draws d JOIN entries s ON s.id = d.spend_id "
    "WHERE d.lot_id = l.entry_id AND s.seq <= ?), 0) AS held FROM lots l "
    "WHERE l.member_pk = ? AND l.seq <= ? AND l.expires_at > ? AND l.expires_at < ?) lots_then "
    "WHERE held > 0 GROUP BY expires_at ORDER BY expires_at LIMIT 1"
)


class SqlReports:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def checkpoint(self, member_pk: int, *, seq: int, at: datetime, account: Account) -> None:
        a = account
        self._s.run(
            f"INSERT INTO balance_checkpoints (member_pk, seq, at, {_COUNTERS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                member_pk,
                seq,
                to_micros(at),
                a.balance,
                a.lifetime_earned,
                a.lifetime_redeemed,
                a.lifetime_deducted,
                a.lifetime_expired,
                a.lifetime_transferred_in,
                a.lifetime_transferred_out,
            ),
        )

    def past(self, member_pk: int, *, at: datetime) -> PastRows:
        moment = to_micros(at)
        sent = (
            self._s.run(_LATEST_CHECKPOINT, (member_pk, moment)),
            self._s.run(
                _ENTRIES_AFTER,
                (member_pk, member_pk, moment, member_pk, moment, NEVER, moment),
            ),
            self._s.run(_PENDING_AT, (member_pk, moment, moment, moment)),
        )
        latest, found, pending = sent[0].fetchone(), sent[1].fetchall(), sent[2].fetchone()
        start = 0 if latest is None else int(latest[0])
        checkpoint = (
            Account()
            if latest is None
            else Account(
                balance=latest[1],
                lifetime_earned=latest[2],
                lifetime_redeemed=latest[3],
                lifetime_deducted=latest[4],
                lifetime_expired=latest[5],
                lifetime_transferred_in=latest[6],
                lifetime_transferred_out=latest[7],
            )
        )
        return PastRows(
            checkpoint=checkpoint,
            entries=[(r[0], int(r[1])) for r in found],
            last_seq=int(found[-1][2]) if found else start,
            pending=int(pending[0]),
        )

    def past_expiration(
        self, member_pk: int, *, at: datetime, last_seq: int
    ) -> tuple[int, datetime] | None:
        row = self._s.one(_SOONEST_EXPIRY_AT, (last_seq, member_pk, last_seq, to_micros(at), NEVER))
        return None if row is None else (int(row[1]), from_micros(row[0]))

    # The program report.

    def rolled_up_until(self, program_id: int) -> datetime | None:
        row = self._s.one(
            "SELECT filled_until FROM report_progress WHERE program_id = ?", (program_id,)
        )
        return None if row is None else from_micros(row[0])

    def roll_up(self, program_id: int, *, start: datetime | None, end: datetime) -> None:
        low = -NEVER if start is None else to_micros(start)
        self._s.run(
            "INSERT INTO report_days (program_id, day, type, points, entries) "
            f"SELECT program_id, {_DAY}, type, SUM(points), COUNT(*) FROM entries "
            "WHERE program_id = ? AND status = 'posted' AND effective_at >= ? "
            f"AND effective_at < ? GROUP BY program_id, {_DAY}, type "
            # Two reports rolling up the same days at once add the same figures: one suffices.
            "ON CONFLICT (program_id, day, type) DO NOTHING",
            (program_id, low, to_micros(end)),
        )
        self._s.run(
            "INSERT INTO report_progress (program_id, filled_until) VALUES (?, ?) "
            "ON CONFLICT (program_id) DO UPDATE SET filled_until = CASE "
            "WHEN excluded.filled_until > report_progress.filled_until "
            "THEN excluded.filled_until ELSE report_progress.filled_until END",
            (program_id, to_micros(end)),
        )

    def due_since(self) -> datetime | None:
        row = self._s.one(
            "SELECT MIN(due) FROM (SELECT MIN(available_at) AS due FROM entries "
            "WHERE status = 'pending' UNION ALL SELECT MIN(expires_at) FROM lots "
            "WHERE remaining > 0) soonest"
        )
        value = None if row is None else row[0]
        return None if value is None or value >= NEVER else from_micros(value)

    def day_totals(
        self, program_id: int, *, start: datetime, end: datetime, rolled_until: datetime | None
    ) -> list[tuple[datetime, str, int]]:
        low, high = to_micros(start), to_micros(end)
        split = min(max(low, to_micros(rolled_until)), high) if rolled_until else low
        found = self._s.all(
            "SELECT day, type, points FROM report_days WHERE program_id = ? AND day >= ? "
            "AND day < ?",
            (program_id, low, split),
        )
        found += self._s.all(
            f"SELECT {_DAY}, type, SUM(points) FROM entries WHERE program_id = ? "
            "AND status = 'posted' AND effective_at >= ? AND effective_at < ? "
            f"GROUP BY {_DAY}, type",
            (program_id, split, high),
        )
        return [(from_micros(r[0]), r[1], int(r[2])) for r in found]

    def active_members(self, program_id: int, *, start: datetime, end: datetime) -> int:
        # One probe of entries_member_time per member: a year costs what a day does.
        row = self._s.one(
            "SELECT COUNT(*) FROM members m WHERE m.program_id = ? AND EXISTS (SELECT 1 "
            "FROM entries e WHERE e.member_pk = m.pk AND e.status = 'posted' "
            "AND e.effective_at >= ? AND e.effective_at < ?)",
            (program_id, to_micros(start), to_micros(end)),
        )
        return int(row[0])

    def outstanding(self, program_id: int) -> tuple[int, int, int]:
        row = self._s.one(
            "SELECT COALESCE(SUM(balance), 0), COALESCE(SUM(pending), 0), COUNT(*) "
            "FROM members WHERE program_id = ?",
            (program_id,),
        )
        return int(row[0]), int(row[1]), int(row[2])

    def expiring(self, program_id: int, *, before: list[datetime]) -> list[int]:
        if not before:
            return []
        moments = [to_micros(m) for m in before]
        sums = ", ".join(
            "COALESCE(SUM(CASE WHEN l.expires_at < ? THEN l.remaining ELSE 0 END), 0)"
            for _ in moments
        )
        # The open lots expiring soonest, from lots_expiring, each checked for its program
        # (`+` keeps SQLite from walking every member's lots instead).
        row = self._s.one(
            f"SELECT {sums} FROM lots l JOIN members m ON m.pk = +l.member_pk "
            "WHERE l.remaining > 0 AND l.expires_at < ? AND m.program_id = ?",
            (*moments, max(moments), program_id),
        )
        return [int(v) for v in row]
