"""`AuditQueries` in SQL: reads across every member, for `tally verify` and the sweep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from tally.domain import EntryStatus
from tally.ports import LedgerCheck
from tally.storage.sql import rows
from tally.storage.sql.reports import DAY
from tally.storage.sql.rows import MEMBER_COLUMNS, from_micros, to_micros
from tally.storage.sql.session import Session


class SqlAudit:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def ledger_checks(self) -> Iterator[LedgerCheck]:
        members = [
            rows.member(r) for r in self._s.all(f"SELECT {MEMBER_COLUMNS} FROM members ORDER BY pk")
        ]
        for member in members:
            groups = self._s.all(
                "SELECT type, status, COUNT(*), SUM(points) FROM entries WHERE member_pk = ? "
                "GROUP BY type, status",
                (member.pk,),
            )
            # The balance_after chain, checked in the database so no history is held in memory.
            breaks = self._s.all(
                "SELECT id, balance_after, running FROM (SELECT id, balance_after, seq, "
                "SUM(points) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running "
                "FROM entries WHERE member_pk = ? AND status = 'posted') chain "
                "WHERE balance_after IS NULL OR balance_after <> running ORDER BY seq LIMIT 20",
                (member.pk,),
            )
            lots = self._s.one(
                "SELECT COALESCE(SUM(remaining), 0) FROM lots WHERE member_pk = ? "
                "AND remaining > 0",  # the same sum, read from the partial index lots_open
                (member.pk,),
            )
            posted = EntryStatus.POSTED.value
            yield LedgerCheck(
                member=member,
                posted_sums={g[0]: int(g[3]) for g in groups if g[1] == posted},
                pending_total=sum(int(g[3]) for g in groups if g[1] == EntryStatus.PENDING.value),
                entry_count=sum(int(g[2]) for g in groups),
                open_lot_total=int(lots[0]),
                chain_breaks=[(b[0], b[1], int(b[2])) for b in breaks],
            )

    def unbalanced_spends(self) -> list[tuple[str, int, int]]:
        """Covers spends (whose draws must add up to their points: transfers out too), lots
        (whose draws plus remainder must add up to the lot's points), and the entries that make
        lots (awards and refunds make one of their points, a transfer in one or more that add up
        to its points; no other entry makes any)."""
        spends = self._s.all(
            "SELECT e.id, -e.points, COALESCE(SUM(d.points), 0) FROM entries e "
            "LEFT JOIN draws d ON d.spend_id = e.id "
            "WHERE e.type IN ('deduct', 'redeem', 'expire', 'transfer_out') "
            "GROUP BY e.id, e.points HAVING COALESCE(SUM(d.points), 0) <> -e.points"
        )
        made = self._s.all(
            "SELECT e.id, CASE WHEN e.type IN ('award', 'refund', 'transfer_in') "
            "AND e.status = 'posted' THEN e.points ELSE 0 END, COALESCE(SUM(l.points), 0) "
            "FROM entries e LEFT JOIN lots l ON l.source_id = e.id "
            "GROUP BY e.id, e.type, e.status, e.points "
            "HAVING COALESCE(SUM(l.points), 0) <> CASE WHEN e.type IN "
            "('award', 'refund', 'transfer_in') AND e.status = 'posted' THEN e.points ELSE 0 END"
        )
        lots = self._s.all(
            "SELECT l.entry_id, l.points, l.remaining + COALESCE(SUM(d.points), 0) FROM lots l "
            "LEFT JOIN draws d ON d.lot_id = l.entry_id "
            "GROUP BY l.entry_id, l.points, l.remaining "
            "HAVING l.remaining + COALESCE(SUM(d.points), 0) <> l.points"
        )
        return [(r[0], int(r[1]), int(r[2])) for r in spends + lots + made]

    def rollup_differences(self) -> list[tuple[int, datetime, str, int, int]]:
        stored = {
            (r[0], r[1], r[2]): int(r[3])
            for r in self._s.all("SELECT program_id, day, type, points FROM report_days")
        }
        day = f"(e.effective_at / {DAY}) * {DAY}"
        actual = {
            (r[0], r[1], r[2]): int(r[3])
            for r in self._s.all(
                f"SELECT e.program_id, {day}, e.type, SUM(e.points) FROM entries e "
                "JOIN report_progress p ON p.program_id = e.program_id "
                "WHERE e.status = 'posted' AND e.effective_at < p.filled_until "
                f"GROUP BY e.program_id, {day}, e.type"
            )
        }
        return [
            (key[0], from_micros(key[1]), key[2], stored.get(key, 0), actual.get(key, 0))
            for key in sorted(stored.keys() | actual.keys())
            if stored.get(key, 0) != actual.get(key, 0)
        ]

    def members_with_due_work(self, *, now: datetime, limit: int) -> list[tuple[int, str]]:
        at = to_micros(now)
        found = self._s.all(
            "SELECT program_id, member_id FROM members WHERE pk IN ("
            "SELECT member_pk FROM entries WHERE status = 'pending' AND available_at <= ? "
            "UNION SELECT member_pk FROM lots WHERE remaining > 0 AND expires_at <= ?) "
            "ORDER BY pk LIMIT ?",
            (at, at, limit),
        )
        return [(r[0], r[1]) for r in found]
