"""How a unit of work talks to a DB-API connection: the statements it runs, nothing they mean.

Queries are written once with `?` placeholders; a `Dialect` holds the few things that differ
between SQLite and PostgreSQL. The role modules beside this one (`members`, `entries`, ...) hold
the queries; the backends (`tally.storage.sqlite`, `tally.storage.postgres`) hold connections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: Any, params: Sequence[Any] = ...) -> Any: ...
    def cursor(self) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL backends."""

    name: str
    placeholder: str
    for_update: str
    for_update_of_member: str  # locks the member row only, not the rows joined to it
    claim_key: Callable[[Connection, int, str], bool]
    claim_keys: Callable[[Connection, int, list[str]], bool]  # every key, in one statement
    # An expression: the events feed shows rows whose `commit_xid` is below it (events.py).
    # With `foreign_xids`, it has one parameter: the ids that query found.
    feed_horizon: str
    # Locks the rows a SELECT picks, skipping rows another transaction holds (webhooks.py).
    skip_locked: str = ""
    # A query for the running transactions that cannot be Tally's (PostgreSQL: other databases'),
    # read before the snapshot the feed is read in (`Session.feed_horizon`).
    foreign_xids: str | None = None
    # Whether a binary `{column}` contains the bytes of the parameter (admin.py).
    bytes_contain: str = "instr({column}, ?) > 0"
    # Each query's text with this dialect's placeholders, made once per process.
    texts: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


class Session:
    """The statements of one open transaction, on one connection.

    With `one_statement`, the work promised to issue a single statement (the store skipped
    BEGIN for it); a second one raises, so the promise is checked rather than trusted.
    """

    __slots__ = ("conn", "dialect", "_statements_left")

    def __init__(self, conn: Connection, dialect: Dialect, *, one_statement: bool = False) -> None:
        self.conn = conn
        self.dialect = dialect
        self._statements_left: int | None = 1 if one_statement else None

    def _count_statement(self) -> None:
        if self._statements_left is None:
            return
        if self._statements_left == 0:
            raise AssertionError("a one-statement read issued a second statement")
        self._statements_left -= 1

    def lock_suffix(self, lock: bool) -> str:
        """What locks the member rows a query reads (the member only, not the rows joined)."""
        return self.dialect.for_update_of_member if lock else ""

    def text(self, sql: str) -> str:
        texts = self.dialect.texts
        found = texts.get(sql)
        if found is None:
            found = texts[sql] = sql.replace("?", self.dialect.placeholder)
        return found

    def run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._count_statement()
        return self.conn.execute(self.text(sql), params)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._count_statement()
            self.conn.cursor().executemany(self.text(sql), rows)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.run(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self.run(sql, params).fetchall())

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """The rows one at a time; several streams of one transaction may be read side by side.
        SQLite steps through a result as it is read; psycopg's cursor holds the whole result, so
        on PostgreSQL this only spares a second copy as a list."""
        return iter(self.run(sql, params).fetchone, None)

    def feed_horizon(self) -> tuple[str, tuple[Any, ...]]:
        """The feed's horizon, as an expression and its parameters, for the next statement.

        On PostgreSQL the running transactions that cannot be Tally's (other databases',
        autovacuum's) are read here, in a statement of their own, before the snapshot of the
        statement that uses the horizon: in a one-statement read (the statement after this one
        sees a snapshot of its own) or at READ COMMITTED. (At REPEATABLE READ the transaction's
        first statement takes the snapshot.) The horizon's own look at them comes after that
        snapshot: one that ends in between is no longer seen, and holds the feed back
        (`tally.storage.postgres._FEED_HORIZON`). This statement reads no table, only who is
        running, so it does not count as a one-statement read's statement."""
        if self.dialect.foreign_xids is None:
            return self.dialect.feed_horizon, ()
        found = self.conn.execute(self.text(self.dialect.foreign_xids)).fetchall()
        return self.dialect.feed_horizon, ([int(row[0]) for row in found],)
