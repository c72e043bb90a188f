"""`LotRows` in SQL: open lots in spend order, their remainders, and the draws spends make.

Spend order is the `lots_open` index's order: soonest expiry first (never-expiring lots carry
`NEVER`, so they come last), then ledger position.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tally.domain import Debt, Draw, Lot
from tally.storage.sql import rows
from tally.storage.sql.rows import LOT_COLUMNS, NEVER, to_micros
from tally.storage.sql.session import Session

CHUNK = 32  # open lots read at a time by a spend


def open_lots_query(member: str, *, after_position: bool) -> str:
    """A chunk of a member's open lots in spend order."""
    position = "AND (expires_at, seq) > (?, ?) " if after_position else ""
    return (
        f"SELECT {LOT_COLUMNS} FROM lots WHERE member_pk = {member} AND remaining > 0 "
        f"{position}ORDER BY expires_at, seq LIMIT {CHUNK}"
    )


_FIRST_LOTS = open_lots_query("?", after_position=False)
_LOTS_AFTER = open_lots_query("?", after_position=True)
_INSERT = (
    "INSERT INTO lots (entry_id, member_pk, seq, points, remaining, expires_at, source_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SqlLots:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def insert(self, lot: Lot, *, member_pk: int) -> None:
        self._s.run(_INSERT, rows.lot_row(lot, member_pk))

    def insert_many(self, lots: list[tuple[Lot, int]]) -> None:
        self._s.run_many(_INSERT, [rows.lot_row(lot, pk) for lot, pk in lots])

    def get(self, lot_id: str) -> Lot | None:
        row = self._s.one(f"SELECT {LOT_COLUMNS} FROM lots WHERE entry_id = ?", (lot_id,))
        return None if row is None else rows.lot(row)

    def debts(self, member_pk: int) -> list[Debt]:
        """Read from the member's reversals (`entries_member_type`); only asked of a member
        whose balance is below zero, so the scan of its reversals is rare."""
        found = self._s.all(
            "SELECT id, owed FROM (SELECT e.id, e.seq, -e.points - COALESCE("
            "(SELECT SUM(d.points) FROM draws d WHERE d.spend_id = e.id), 0) AS owed "
            "FROM entries e WHERE e.member_pk = ? AND e.type = 'reversal' AND e.points < 0) r "
            "WHERE owed > 0 ORDER BY seq",
            (member_pk,),
        )
        return [Debt(r[0], int(r[1])) for r in found]

    def open(self, member_pk: int) -> list[Lot]:
        return self._expiring_by(member_pk, NEVER)

    def page_open(self, member_pk: int, *, offset: int, limit: int) -> list[Lot]:
        found = self._s.all(
            f"SELECT {LOT_COLUMNS} FROM lots WHERE member_pk = ? AND remaining > 0 "
            "ORDER BY expires_at, seq LIMIT ? OFFSET ?",
            (member_pk, limit, offset),
        )
        return [rows.lot(r) for r in found]

    def count_open(self, member_pk: int) -> int:
        found = self._s.one(
            "SELECT count(*) FROM lots WHERE member_pk = ? AND remaining > 0", (member_pk,)
        )
        return int(found[0]) if found else 0

    def due(self, member_pk: int, *, by: datetime) -> list[Lot]:
        return self._expiring_by(member_pk, to_micros(by))

    def _expiring_by(self, member_pk: int, limit: int) -> list[Lot]:
        found = self._s.all(
            f"SELECT {LOT_COLUMNS} FROM lots WHERE member_pk = ? "
            "AND remaining > 0 AND expires_at <= ? ORDER BY expires_at, seq",
            (member_pk, limit),
        )
        return [rows.lot(r) for r in found]

    def covering(self, member_pk: int, points: int, first: list[Any] | None = None) -> list[Lot]:
        """Open lots in spend order, a chunk at a time, until they cover `points` (all of them
        if they don't), so a member with thousands of open lots costs a spend no more than the
        lots it draws on. `first`: the first chunk's rows, when already read."""
        if points <= 0:
            return []
        chunk = self._s.all(_FIRST_LOTS, (member_pk,)) if first is None else first
        lots: list[Lot] = []
        total = 0
        while True:
            lots += [rows.lot(r) for r in chunk]
            total += sum(r[1] for r in chunk)
            if total >= points or len(chunk) < CHUNK:
                return lots
            chunk = self._s.all(_LOTS_AFTER, (member_pk, chunk[-1][2], chunk[-1][3]))

    def set_remaining(self, lot_id: str, remaining: int) -> None:
        self._s.run("UPDATE lots SET remaining = ? WHERE entry_id = ?", (remaining, lot_id))

    def insert_draws(self, spend_id: str, draws: list[Draw]) -> None:
        for draw in draws:
            self._s.run(
                "INSERT INTO draws (spend_id, lot_id, points) VALUES (?, ?, ?)",
                (spend_id, draw.lot_id, draw.points),
            )
