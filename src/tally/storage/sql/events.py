"""The outbox in SQL: `EventRows`.

A feed position is (commit_xid, seq). On SQLite, one writer at a time makes `seq` alone commit
order and `commit_xid` is always 0. On PostgreSQL a row's `seq` is drawn before its transaction
commits, so a later `seq` can become visible first; the feed therefore shows only rows whose
writing transaction is older than every transaction still running (`Dialect.feed_horizon`), in
(transaction id, seq) order. Any row inserted later belongs to a transaction at or above that
horizon, so it sorts after everything already shown: a consumer paging with `after` never misses
a row and never sees one twice.

"After a position" is read as two ranges of the index (program_id, commit_xid, seq): the rest of
the position's own transaction, then every later transaction below the horizon. A row-value
comparison `(commit_xid, seq) > (?, ?)` reads as one range only on `commit_xid`, filtered row by
row: on SQLite, where `commit_xid` is always 0, that was the whole feed, on every fan-out. The
first range needs no horizon: a position is that of a row already visible, so its transaction
has committed, all of its rows with it.
"""

from __future__ import annotations

from datetime import datetime

from tally.domain import Event, FeedPosition
from tally.storage.sql.rows import from_micros, to_micros
from tally.storage.sql.session import Session

_COLUMNS = "commit_xid, seq, id, program_id, type, created_at, body"


class SqlEvents:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def append(self, events: list[Event]) -> None:
        self._s.run_many(
            "INSERT INTO events (id, program_id, type, created_at, body) VALUES (?, ?, ?, ?, ?)",
            [(e.id, e.program_id, e.type, to_micros(e.created_at), e.body) for e in events],
        )

    def position(self, program_id: int, event_id: str) -> FeedPosition | None:
        row = self._s.one(
            "SELECT commit_xid, seq FROM events WHERE id = ? AND program_id = ?",
            (event_id, program_id),
        )
        return None if row is None else (int(row[0]), int(row[1]))

    def after(
        self,
        program_id: int,
        position: FeedPosition | None,
        *,
        limit: int,
        types: list[str] | None = None,
    ) -> list[tuple[FeedPosition, Event]]:
        xid, seq = position if position is not None else (-1, -1)
        typed = "" if not types else f" AND type IN ({', '.join('?' * len(types))})"
        kinds = tuple(types or ())
        horizon, bound = self._s.feed_horizon()
        found = self._s.all(
            f"SELECT * FROM (SELECT {_COLUMNS} FROM events "
            f"WHERE program_id = ? AND commit_xid = ? AND seq > ?{typed} "
            "ORDER BY seq LIMIT ?) AS rest "
            f"UNION ALL SELECT * FROM (SELECT {_COLUMNS} FROM events "
            f"WHERE program_id = ? AND commit_xid > ? "
            f"AND commit_xid < {horizon}{typed} "
            "ORDER BY commit_xid, seq LIMIT ?) AS later "
            "ORDER BY commit_xid, seq LIMIT ?",
            (program_id, xid, seq, *kinds, limit, program_id, xid, *bound, *kinds, limit, limit),
        )
        return [
            ((int(r[0]), int(r[1])), Event(r[2], r[3], r[4], from_micros(r[5]), r[6]))
            for r in found
        ]

    def head(self, program_id: int) -> FeedPosition | None:
        horizon, bound = self._s.feed_horizon()
        row = self._s.one(
            "SELECT commit_xid, seq FROM events "
            f"WHERE program_id = ? AND commit_xid < {horizon} "
            "ORDER BY commit_xid DESC, seq DESC LIMIT 1",
            (program_id, *bound),
        )
        return None if row is None else (int(row[0]), int(row[1]))

    def purge(self, *, before: datetime) -> int:
        found = self._s.all(
            "DELETE FROM events WHERE created_at < ? RETURNING seq", (to_micros(before),)
        )
        return len(found)

    def containing(self, program_id: int, text: str) -> list[Event]:
        # A scan of the program's events (kept 30 days by default): erasure is rare, and an
        # index on every body would cost every write. `_` in a member id matches any one
        # character, so the caller checks what it finds.
        pattern = "%" + text.replace("%", "") + "%"
        found = self._s.all(
            f"SELECT {_COLUMNS} FROM events WHERE program_id = ? AND body LIKE ? ORDER BY seq",
            (program_id, pattern),
        )
        return [Event(r[2], r[3], r[4], from_micros(r[5]), r[6]) for r in found]

    def rewrite(self, event_id: str, body: str) -> None:
        self._s.run("UPDATE events SET body = ? WHERE id = ?", (body, event_id))
