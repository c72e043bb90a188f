"""`AuditQueries` in SQL: reads across every member, for `tally verify` and the sweep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from tally.domain import EntryStatus, EntryType
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
        # Each member, and its balance as stored: what it holds and what it owes.
        found = self._s.all(f"SELECT {MEMBER_COLUMNS}, balance, debt FROM members ORDER BY pk")
        members = [(rows.member(r), (int(r[-2]), int(r[-1]))) for r in found]
        for member, stored in members:
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
            reversed_sums: dict[str, int] = {}
            owed = 0
            if any(g[0] == EntryType.REVERSAL.value for g in groups):
                reversed_sums, owed = self._reversals_of(member.pk)
            yield LedgerCheck(
                member=member,
                posted_sums={g[0]: int(g[3]) for g in groups if g[1] == posted},
                pending_total=sum(int(g[3]) for g in groups if g[1] == EntryStatus.PENDING.value),
                entry_count=sum(int(g[2]) for g in groups),
                open_lot_total=int(lots[0]),
                chain_breaks=[(b[0], b[1], int(b[2])) for b in breaks],
                reversed_sums=reversed_sums,
                owed=owed,
                held_and_owed=stored,
            )

    def _reversals_of(self, member_pk: int) -> tuple[dict[str, int], int]:
        """A member's posted reversals summed by the type of the row each reverses, and what
        its reversals of awards are still owed (their points no draw covers)."""
        sums = self._s.all(
            "SELECT o.type, SUM(r.points) FROM entries r JOIN entries o ON o.id = r.reverses "
            "WHERE r.member_pk = ? AND r.type = 'reversal' AND r.status = 'posted' "
            "GROUP BY o.type",
            (member_pk,),
        )
        owed = self._s.one(
            "SELECT COALESCE(SUM(-e.points - COALESCE((SELECT SUM(d.points) FROM draws d "
            "WHERE d.spend_id = e.id), 0)), 0) FROM entries e "
            "WHERE e.member_pk = ? AND e.type = 'reversal' AND e.points < 0",
            (member_pk,),
        )
        return {row[0]: int(row[1]) for row in sums}, int(owed[0])

    def unbalanced_reversals(self) -> list[tuple[str, int, int]]:
        found = self._s.all(
            "SELECT o.id, o.points_reversed, COALESCE(x.total, 0) FROM entries o LEFT JOIN "
            "(SELECT reverses, SUM(ABS(points)) AS total FROM entries WHERE reverses IS NOT NULL "
            "GROUP BY reverses) x ON x.reverses = o.id "
            "WHERE (o.points_reversed <> 0 OR x.total IS NOT NULL) "
            "AND (COALESCE(x.total, 0) <> o.points_reversed OR o.points_reversed > ABS(o.points))"
        )
        return [(r[0], int(r[1]), int(r[2])) for r in found]

    def stray_reversals(self) -> list[str]:
        found = self._s.all(
            "SELECT r.id FROM entries r LEFT JOIN entries o ON o.id = r.reverses "
            "WHERE r.type = 'reversal' AND (o.id IS NULL OR o.member_pk <> r.member_pk "
            "OR o.status <> 'posted' OR r.status <> 'posted' "
            "OR NOT ((o.type = 'award' AND r.points < 0) OR (o.type = 'deduct' AND r.points > 0))) "
            "UNION SELECT id FROM entries WHERE type <> 'reversal' AND reverses IS NOT NULL "
            "ORDER BY 1"
        )
        return [r[0] for r in found]

    def unbalanced_spends(self) -> list[tuple[str, int, int]]:
        """Covers spends (whose draws must add up to their points: transfers out too; a
        reversal of an award's at most to its points), lots
        (whose draws plus remainder must add up to the lot's points), and the entries that make
        lots (awards and refunds make one of their points, a transfer in one or more that add up
        to its points; no other entry makes any)."""
        spends = self._s.all(
            "SELECT e.id, -e.points, COALESCE(SUM(d.points), 0) FROM entries e "
            "LEFT JOIN draws d ON d.spend_id = e.id "
            "WHERE e.type IN ('deduct', 'redeem', 'expire', 'transfer_out') "
            "GROUP BY e.id, e.points HAVING COALESCE(SUM(d.points), 0) <> -e.points"
        )
        # A reversal of an award draws at most its points: the rest is a debt (`_reversals_of`).
        overdrawn = self._s.all(
            "SELECT e.id, -e.points, SUM(d.points) FROM entries e "
            "JOIN draws d ON d.spend_id = e.id WHERE e.type = 'reversal' "
            "GROUP BY e.id, e.points HAVING SUM(d.points) > -e.points"
        )
        # Awards, refunds, transfers in and reversals of deducts (the positive ones) make lots.
        makes_lots = (
            "CASE WHEN (e.type IN ('award', 'refund', 'transfer_in') OR (e.type = 'reversal' "
            "AND e.points > 0)) AND e.status = 'posted' THEN e.points ELSE 0 END"
        )
        made = self._s.all(
            f"SELECT e.id, {makes_lots}, COALESCE(SUM(l.points), 0) "
            "FROM entries e LEFT JOIN lots l ON l.source_id = e.id "
            "GROUP BY e.id, e.type, e.status, e.points "
            f"HAVING COALESCE(SUM(l.points), 0) <> {makes_lots}"
        )
        lots = self._s.all(
            "SELECT l.entry_id, l.points, l.remaining + COALESCE(SUM(d.points), 0) FROM lots l "
            "LEFT JOIN draws d ON d.lot_id = l.entry_id "
            "GROUP BY l.entry_id, l.points, l.remaining "
            "HAVING l.remaining + COALESCE(SUM(d.points), 0) <> l.points"
        )
        return [(r[0], int(r[1]), int(r[2])) for r in spends + overdrawn + lots + made]

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
