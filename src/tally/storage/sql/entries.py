"""`EntryRows` in SQL: the ledger rows, a member's history pages, and pending awards."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tally.domain import Entry, HistoryQuery, Member
from tally.storage.sql import rows
from tally.storage.sql.rows import AFTER_ENTRY, ENTRY_COLUMNS, to_micros
from tally.storage.sql.session import Session

_INSERT = (
    "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
    "reference, metadata, balance_after, created_at, effective_at, available_at, expires_at, "
    "posted_at, created_by, reverses, points_reversed) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _history_filter(query: HistoryQuery) -> tuple[str, list[Any]]:
    clauses, params = "", list[Any]()
    if query.type is not None:
        clauses += " AND e.type = ?"
        params.append(query.type.value)
    if query.start is not None:
        clauses += " AND e.effective_at >= ?"
        params.append(to_micros(query.start))
    if query.end is not None:
        clauses += " AND e.effective_at <= ?"
        params.append(to_micros(query.end))
    return clauses, params


class SqlEntries:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def insert(self, entry: Entry) -> None:
        self._s.run(_INSERT, rows.entry_row(entry))

    def insert_many(self, entries: list[Entry]) -> None:
        self._s.run_many(_INSERT, [rows.entry_row(e) for e in entries])

    def post_pending(
        self, entry_id: str, *, seq: int, balance_after: int, posted_at: datetime
    ) -> None:
        at = to_micros(posted_at)
        self._s.run(
            "UPDATE entries SET status = 'posted', seq = ?, balance_after = ?, posted_at = ?, "
            "effective_at = ? WHERE id = ? AND status = 'pending'",
            (seq, balance_after, at, at, entry_id),
        )

    def cancel_pending(self, entry_id: str, *, at: datetime) -> None:
        self._s.run(
            "UPDATE entries SET status = 'cancelled', cancelled_at = ? "
            "WHERE id = ? AND status = 'pending'",
            (to_micros(at), entry_id),
        )

    def set_points_reversed(self, entry_id: str, points: int) -> None:
        self._s.run("UPDATE entries SET points_reversed = ? WHERE id = ?", (points, entry_id))

    def get(self, program_id: int, entry_id: str) -> Entry | None:
        row = self._s.one(
            f"SELECT {ENTRY_COLUMNS}, m.member_id FROM entries e "
            "JOIN members m ON m.pk = e.member_pk WHERE e.id = ? AND e.program_id = ?",
            (entry_id, program_id),
        )
        return None if row is None else rows.entry(row, row[AFTER_ENTRY])

    def page(
        self, member: Member, query: HistoryQuery, *, offset: int, limit: int, newest_first: bool
    ) -> list[Entry]:
        clauses, params = _history_filter(query)
        order = "DESC" if newest_first else "ASC"
        found = self._s.all(
            f"SELECT {ENTRY_COLUMNS} FROM entries e WHERE e.member_pk = ?{clauses} "
            f"ORDER BY e.seq {order} LIMIT ? OFFSET ?",
            (member.pk, *params, limit, offset),
        )
        return [rows.entry(r, member.member_id) for r in found]

    def count(self, member: Member, query: HistoryQuery) -> int:
        clauses, params = _history_filter(query)
        row = self._s.one(
            f"SELECT COUNT(*) FROM entries e WHERE e.member_pk = ?{clauses}",
            (member.pk, *params),
        )
        return int(row[0])

    def pending_awards(self, member_pk: int, *, due_by: datetime) -> list[Entry]:
        found = self._s.all(
            f"SELECT {ENTRY_COLUMNS}, m.member_id FROM entries e "
            "JOIN members m ON m.pk = e.member_pk "
            "WHERE e.member_pk = ? AND e.status = 'pending' AND e.available_at <= ? "
            "ORDER BY e.available_at, e.seq",
            (member_pk, to_micros(due_by)),
        )
        return [rows.entry(r, r[AFTER_ENTRY]) for r in found]

    def erase_metadata(self, member_pk: int) -> int:
        found = self._s.all(
            "UPDATE entries SET metadata = NULL WHERE member_pk = ? AND metadata IS NOT NULL "
            "RETURNING id",
            (member_pk,),
        )
        return len(found)

    def export_page(
        self, program_id: int, query: HistoryQuery, *, after: str | None, limit: int
    ) -> list[Entry]:
        clauses, params = _history_filter(query)
        found = self._s.all(
            f"SELECT {ENTRY_COLUMNS}, m.member_id FROM entries e "
            "JOIN members m ON m.pk = e.member_pk "
            f"WHERE e.program_id = ? AND e.id > ?{clauses} ORDER BY e.id LIMIT ?",
            (program_id, after or "", *params, limit),
        )
        return [rows.entry(r, r[AFTER_ENTRY]) for r in found]
