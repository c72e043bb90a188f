"""One transaction's statements on libpq's pipeline, with one wait on the socket per round trip.

The server's units of work run on psycopg's connections, but not through its cursors: psycopg's
asyncio cursor waits on the socket for every statement (register with the event loop, send, poll,
unregister), and in pipeline mode turns its machinery once more per statement. That was about
300 µs of CPU per award, more than everything else in the request together (bench/README.md,
issue 15). Here a statement goes to the connection's libpq handle (`psycopg.pq`) at once, with
psycopg's own adapters (its `Transformer`) turning parameters into bytes and rows back into
values, and nothing waits until a result is read: then everything queued is sent with one Sync
and the event loop is awaited once, until the answers to the Sync are in. An award is two such
round trips: `BEGIN` with the locked member query, then the writes with `COMMIT`.

A failed statement does not fail where it was queued but at the next round trip, as in psycopg's
own pipeline mode: the server skips the rest up to the Sync, and the first error is raised as
psycopg's exception for its SQLSTATE (`DeadlockDetected`, `UniqueViolation`, ...).

Statements are prepared on the server, as psycopg would (after `PREPARE_AFTER` uses of a query
with the same parameter types), only when the connection's server session is its own
(`tally.storage.postgres`): never behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

from tally.storage.bridge import wait_for

PREPARE_AFTER = 5  # uses of one query with one set of parameter types; psycopg's default
# Statements queued between two turns of the event loop, and answers read between two: a bulk
# award of 10,000 items queues tens of thousands, and other requests must not wait for them all
# (tests/test_stall.py).
_STATEMENTS_PER_TURN = 200
_ANSWERS_PER_TURN = 1000
_MAX_PREPARED = 200  # per connection; Tally's queries are far fewer
_MAX_COUNTED = 1000  # queries counted towards preparing; forgotten all at once beyond it

_OK = pq.ExecStatus.COMMAND_OK
_TUPLES = pq.ExecStatus.TUPLES_OK
_FATAL = pq.ExecStatus.FATAL_ERROR
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_IDLE = pq.TransactionStatus.IDLE
_TEXT = pq.Format.TEXT

_PLACEHOLDER = re.compile(r"%[s%]")
_NUMBERED: dict[str, tuple[bytes, int]] = {}


def numbered(sql: str) -> tuple[bytes, int]:
    """A query written with psycopg's `%s` placeholders (and `%%` for `%`), with PostgreSQL's
    `$1, $2, ...`; and how many parameters it takes."""
    found = _NUMBERED.get(sql)
    if found is None:
        count = 0

        def number(match: re.Match[str]) -> str:
            nonlocal count
            if match.group() == "%%":
                return "%"
            count += 1
            return f"${count}"

        text = _PLACEHOLDER.sub(number, sql)
        found = _NUMBERED[sql] = (text.encode(), count)
    return found


class Prepared:
    """A connection's statements prepared on the server, and how often each query has run."""

    __slots__ = ("names", "uses", "enabled")

    def __init__(self, enabled: bool) -> None:
        self.names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        self.uses: dict[tuple[bytes, tuple[int, ...]], int] = {}
        self.enabled = enabled


class Result:
    """A statement's rows, read from the server at the first `fetchone` or `fetchall`."""

    __slots__ = ("_pipe", "_result", "_rows", "_next")

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self._result: pq.abc.PGresult | None = None
        self._rows: list[Any] | None = None
        self._next = 0

    def fetchone(self) -> Any:
        rows = self._loaded()
        if self._next >= len(rows):
            return None
        self._next += 1
        return rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rows = self._loaded()
        rest = rows[self._next :]
        self._next = len(rows)
        return rest

    def _loaded(self) -> list[Any]:
        if self._rows is None:
            if self._result is None:
                wait_for(self._pipe.sync())
            self._rows = self._pipe.load(self._result)
            self._result = None
        return self._rows


class Pipe:
    """The part of a DB-API connection `tally.storage.sql.Session` uses, on one psycopg
    connection in libpq's pipeline mode, for one transaction. Enter with `open`; leave with
    `close` once the last round trip is read (or `discard` the connection)."""

    __slots__ = (
        "_conn",
        "_pg",
        "_tx",
        "_prepared",
        "_queue",
        "_encoding",
        "_since_turn",
        "round_trips",
    )

    def __init__(self, conn: psycopg.AsyncConnection[Any], prepared: Prepared) -> None:
        self._conn = conn
        self._pg = conn.pgconn
        self._tx = Transformer(conn)
        self._prepared = prepared
        # What each result up to the next Sync belongs to: a Result, a prepared name (the
        # answer to preparing it) or None (a statement whose result nobody reads).
        self._queue: list[Result | bytes | None] = []
        self._encoding = conn.info.encoding
        self._since_turn = 0  # statements queued since the event loop last ran
        self.round_trips = 0  # Syncs sent, each answered before the next

    def open(self) -> None:
        self._pg.enter_pipeline_mode()

    def close(self) -> None:
        """Leave pipeline mode; everything sent must have been read (`sync`)."""
        self._pg.exit_pipeline_mode()

    # The connection, as `Session` calls it (inside `run_in_greenlet`).

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        result = Result(self)
        self.send(sql, params, result)
        self._maybe_yield()
        return result

    def cursor(self) -> Pipe:
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self.send(sql, row, None)
            self._maybe_yield()

    def _maybe_yield(self) -> None:
        """Every `_STATEMENTS_PER_TURN` statements, send what is queued so far (without a Sync:
        nothing waits for an answer) and let the event loop run its other requests."""
        self._since_turn += 1
        if self._since_turn >= _STATEMENTS_PER_TURN:
            self._since_turn = 0
            wait_for(self._give_way())

    async def _give_way(self) -> None:
        await self._flush()
        await asyncio.sleep(0)

    # Sending and reading.

    def send(self, sql: str, params: Sequence[Any], result: Result | None) -> None:
        query, count = numbered(sql)
        if count != len(params):
            raise psycopg.ProgrammingError(
                f"the query has {count} placeholders but {len(params)} parameters were passed"
            )
        pg = self._pg
        if not params:
            pg.send_query_params(query, None)
            self._queue.append(result)
            return
        tx = self._tx
        values = tx.dump_sequence(params, [PyFormat.AUTO] * count)
        types = tuple(tx.types or ())
        name = self._statement_name(query, types)
        if name is None:
            pg.send_query_params(query, values, types, tx.formats, _TEXT)
        else:
            pg.send_query_prepared(name, values, tx.formats, _TEXT)
        self._queue.append(result)

    def _statement_name(self, query: bytes, types: tuple[int, ...]) -> bytes | None:
        """The name `query` is prepared under on the server, if it is or now gets prepared."""
        prepared = self._prepared
        if not prepared.enabled:
            return None
        key = (query, types)
        name = prepared.names.get(key)
        if name is not None:
            return name
        uses = prepared.uses.get(key, 0) + 1
        if uses < PREPARE_AFTER or len(prepared.names) >= _MAX_PREPARED:
            if len(prepared.uses) >= _MAX_COUNTED:
                prepared.uses.clear()
            prepared.uses[key] = uses
            return None
        prepared.uses.pop(key, None)
        name = prepared.names[key] = f"tally_{len(prepared.names)}".encode()
        self._pg.send_prepare(name, query, types)
        self._queue.append(name)
        return name

    def load(self, result: pq.abc.PGresult | None) -> list[Any]:
        if result is None or result.status != _TUPLES:
            raise psycopg.ProgrammingError("the statement returns no rows to fetch")
        tx = self._tx
        tx.set_pgresult(result)
        return tx.load_rows(0, result.ntuples, tuple)

    async def sync(self) -> None:
        """Send everything queued with a Sync, read every answer up to it and hand each to its
        statement; then raise the first error among them, if any. Nothing queued: nothing to do.
        """
        if not self._queue:
            return
        pg = self._pg
        pg.pipeline_sync()
        self.round_trips += 1
        self._since_turn = 0
        await self._flush()
        queue, self._queue = self._queue, []
        answers: list[pq.abc.PGresult | None] = []
        current: pq.abc.PGresult | None = None
        loop = asyncio.get_running_loop()
        fd = pg.socket
        read = 0
        while True:
            pg.consume_input()
            while not pg.is_busy():
                got = pg.get_result()
                if got is None:
                    if current is None:
                        break  # the next answer has not arrived yet
                    answers.append(current)  # the end of one statement's answer
                    current = None
                    read += 1
                    if read % _ANSWERS_PER_TURN == 0:
                        await asyncio.sleep(0)
                elif got.status == _SYNC:
                    self._hand_out(queue, answers)
                    return
                else:
                    current = got
            await _readable(loop, fd)

    def _hand_out(
        self, queue: list[Result | bytes | None], answers: list[pq.abc.PGresult | None]
    ) -> None:
        error: pq.abc.PGresult | None = None
        for owner, answer in zip(queue, answers, strict=True):
            failed = answer is None or answer.status not in (_OK, _TUPLES)
            if failed and error is None and answer is not None and answer.status == _FATAL:
                error = answer
            if isinstance(owner, bytes):
                if failed:  # never prepared: the name is free, its query starts counting anew
                    names = self._prepared.names
                    for key, name in list(names.items()):
                        if name == owner:
                            del names[key]
            elif owner is not None and not failed:
                owner._result = answer
        if error is not None:
            raise pg_errors.error_from_result(error, encoding=self._encoding)

    async def _flush(self) -> None:
        """Send libpq's buffer; while the socket takes no more, read what the server sends
        back (a server whose answers are not read stops reading too)."""
        pg = self._pg
        if pg.flush() == 0:
            return
        loop = asyncio.get_running_loop()
        fd = pg.socket
        while pg.flush() != 0:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _wake, ready)
            loop.add_writer(fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
                loop.remove_writer(fd)
            pg.consume_input()

    def finished(self) -> bool:
        """Whether the connection is out of any transaction, nothing left unread."""
        return not self._queue and self._pg.transaction_status == _IDLE

    def in_transaction(self) -> bool:
        return self._pg.transaction_status != _IDLE

    def usable(self) -> bool:
        """Whether the connection is still up, as far as libpq knows."""
        return self._pg.status == pq.ConnStatus.OK


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _wake, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
