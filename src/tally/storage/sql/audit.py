"""`AuditQueries` in SQL: reads across every member, for `tally verify` and the sweep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from tally.domain import EntryStatus
from tally.ports import LedgerCheck
from tally.storage.sql import rows
from tally.storage.sql.reports import DAY
from tally.storage.sql.rows import MEMBER_COLUMNS, from_micros, to_micros
from tally.storage.sql.session import Session

# The balance_after breaks reported per member: the first ones show where its chain went wrong.
CHAIN_BREAKS = 20


class SqlAudit:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def ledger_checks(self) -> Iterator[LedgerCheck]:
        # One query per figure over every member at once, each read in member order beside the
        # members themselves: a fixed number of passes over each table, whatever the number of
        # members, and only per-member sums held in memory.
        members = self._s.stream(f"SELECT {MEMBER_COLUMNS}, balance, debt FROM members ORDER BY pk")
        groups = _PerMember(
            self._s.stream(
                "SELECT member_pk, type, status, COUNT(*), SUM(points) FROM entries "
                "GROUP BY member_pk, type, status ORDER BY member_pk, type, status"
            )
        )
        # The balance_after chain, checked in the database so no history is held in memory;
        # the first CHAIN_BREAKS breaks of each member.
        breaks = _PerMember(
            self._s.stream(
                "SELECT member_pk, id, balance_after, running FROM (SELECT member_pk, id, "
                "balance_after, running, seq, "
                "ROW_NUMBER() OVER (PARTITION BY member_pk ORDER BY seq) AS nth FROM ("
                "SELECT member_pk, id, balance_after, seq, SUM(points) OVER "
                "(PARTITION BY member_pk ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running "
                "FROM entries WHERE status = 'posted') chain "
                "WHERE balance_after IS NULL OR balance_after <> running) broken "
                f"WHERE nth <= {CHAIN_BREAKS} ORDER BY member_pk, seq"
            )
        )
        lots = _PerMember(
            self._s.stream(
                "SELECT member_pk, SUM(remaining) FROM lots WHERE remaining > 0 "
                "GROUP BY member_pk ORDER BY member_pk"
            )
        )
        # Posted reversals summed by the type of the row each reverses. (The join needs
        # `reverses`; saying so lets PostgreSQL find them in the partial index entries_reverses.)
        reversed_sums = _PerMember(
            self._s.stream(
                "SELECT r.member_pk, o.type, SUM(r.points) FROM entries r "
                "JOIN entries o ON o.id = r.reverses WHERE r.reverses IS NOT NULL "
                "AND r.type = 'reversal' AND r.status = 'posted' "
                "GROUP BY r.member_pk, o.type ORDER BY r.member_pk"
            )
        )
        # What reversals of awards are still owed: their points no draw covers.
        owed = _PerMember(
            self._s.stream(
                "SELECT member_pk, SUM(unpaid) FROM (SELECT e.member_pk, "
                "-e.points - COALESCE(SUM(d.points), 0) AS unpaid FROM entries e "
                "LEFT JOIN draws d ON d.spend_id = e.id "
                "WHERE e.type = 'reversal' AND e.points < 0 "
                "GROUP BY e.id, e.member_pk, e.points) reversal GROUP BY member_pk "
                "ORDER BY member_pk"
            )
        )
        posted, pending = EntryStatus.POSTED.value, EntryStatus.PENDING.value
        for found in members:
            member = rows.member(found)
            mine = groups.of(member.pk)
            yield LedgerCheck(
                member=member,
                posted_sums={g[1]: int(g[4]) for g in mine if g[2] == posted},
                pending_total=sum(int(g[4]) for g in mine if g[2] == pending),
                entry_count=sum(int(g[3]) for g in mine),
                open_lot_total=lots.total(member.pk),
                chain_breaks=[(b[1], b[2], int(b[3])) for b in breaks.of(member.pk)],
                reversed_sums={r[1]: int(r[2]) for r in reversed_sums.of(member.pk)},
                owed=owed.total(member.pk),
                held_and_owed=(int(found[-2]), int(found[-1])),
            )

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


class _PerMember:
    """A query's rows in member order (its first column the member's pk), handed out one member
    at a time while members are read in the same order."""

    __slots__ = ("_rows", "_next")

    def __init__(self, found: Iterator[Any]) -> None:
        self._rows = found
        self._next = next(found, None)

    def of(self, member_pk: int) -> list[Any]:
        """The rows of `member_pk`. Rows of a pk no member has (foreign keys forbid them) are
        passed over."""
        mine = []
        while self._next is not None and self._next[0] <= member_pk:
            if self._next[0] == member_pk:
                mine.append(self._next)
            self._next = next(self._rows, None)
        return mine

    def total(self, member_pk: int) -> int:
        """The figure of a query of one (pk, figure) row per member: 0 for a member it lacks."""
        mine = self.of(member_pk)
        return int(mine[0][1]) if mine else 0
