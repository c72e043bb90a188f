"""SQLite backend: one file, WAL with synchronous=FULL, and group commit.

Writes from every request of a process are queued. A drain task takes whatever is queued, runs
each piece in its own SAVEPOINT inside one `BEGIN IMMEDIATE` transaction, commits once (one
fsync for the lot), and only then answers each request. A piece that fails is rolled back to its
savepoint alone.

The pieces run on the event loop's thread: they are short and CPU-bound, and a separate writer
thread would spend as long waiting for the GIL as working. Only what waits on the disk or on
another process (taking the write turn, COMMIT's fsync) goes to a helper thread, so the loop
keeps serving requests meanwhile. Several processes on one file take turns on a file lock.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tally.errors import Unavailable
from tally.ports import Tx
from tally.storage.migrate import apply_migrations
from tally.storage.sql import Connection, Dialect, SqlTx

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
MAX_BATCH = 512


def _always_claimed(conn: Connection, program_id: int, key: str) -> bool:
    # Writers are serialised by the database lock, so no other transaction can hold the key.
    return True


DIALECT = Dialect(
    name="sqlite",
    placeholder="?",
    for_update="",
    for_update_of_member="",
    claim_key=_always_claimed,
)


def path_from_url(url: str) -> Path:
    """`sqlite:///relative.db` or `sqlite:////absolute.db` → the file's path."""
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len("sqlite:///") :])


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


@dataclass
class _Job:
    work: Callable[[Tx], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    outcome: Any = None
    failure: BaseException | None = None


def _settle(job: _Job) -> None:
    if job.future.cancelled():
        return
    if job.failure is not None:
        job.future.set_exception(job.failure)
    else:
        job.future.set_result(job.outcome)


def _translate(error: sqlite3.Error) -> BaseException:
    """Database-level failures become `Unavailable`; their text stays in the server's log."""
    if isinstance(error, sqlite3.OperationalError):
        return Unavailable("The database is busy; nothing was changed. Please retry.")
    return error


class SqliteStore:
    """`tally.ports.Store` on a SQLite file."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_from_url(url)
        self._local = threading.local()
        self._state = threading.Lock()  # guards the queue and the drainer, across event loops
        self._pending: list[_Job] = []
        self._drainer: asyncio.Task[None] | None = None
        self._writer: sqlite3.Connection | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tally-sqlite-disk")
        self._turn_path = f"{self.path}-writer.lock"
        self._turn_file: Any = None
        self._holding = False  # this process holds the write turn
        self._opened: list[sqlite3.Connection] = []
        self.commits = 0  # group commits made, and the units of work they carried
        self.committed_jobs = 0

    # the contract

    def migrate(self) -> list[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        applied = apply_migrations(yoyo_url=self.url, backend_name="sqlite")
        connect(self.path).close()  # leaves the file in WAL mode
        return applied

    def transact(self, work: Callable[[Tx], T]) -> T:
        # It takes the write turn the group commits take (below), so it queues with them in the
        # kernel instead of polling SQLite's busy handler while they come and go.
        with open(self._turn_path, "a") as turn:  # the turn is given back when this closes
            fcntl.flock(turn, fcntl.LOCK_EX)
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise _translate(error) from error
            try:
                result = work(SqlTx(conn, DIALECT))
                conn.execute("COMMIT")
                return result
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    async def write(self, work: Callable[[Tx], T]) -> T:
        loop = asyncio.get_running_loop()
        job = _Job(work, loop, loop.create_future())
        with self._state:
            self._pending.append(job)
            if self._drainer is None:
                self._drainer = loop.create_task(self._drain())
        result: T = await job.future
        return result

    # Reads are short indexed lookups: running them on the event loop's own connection is
    # cheaper than a hop to a thread. WAL lets them run beside the writer.

    async def lookup(self, work: Callable[[Tx], T]) -> T:
        # One statement reads one snapshot without BEGIN.
        return work(SqlTx(self._connection(), DIALECT, one_statement=True))

    async def read(self, work: Callable[[Tx], T]) -> T:
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            return work(SqlTx(conn, DIALECT))
        finally:
            conn.execute("COMMIT")

    async def aclose(self) -> None:
        """Nothing is tied to the event loop: the connections close in `close`."""

    def close(self) -> None:
        with self._state:
            for conn in [*self._opened, self._writer]:
                if conn is not None:
                    conn.close()
            self._opened.clear()
            self._writer = None
            self._local = threading.local()
            if self._turn_file is not None:
                self._turn_file.close()
                self._turn_file = None

    # internals

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._state:
                self._opened.append(conn)
        return conn

    async def _drain(self) -> None:
        try:
            while batch := self._next_batch():
                await self._write_batch(batch)
        finally:
            with self._state:
                self._drainer = None
            # Cancelled half-way (the loop is shutting down): give the turn and the
            # transaction back, after whatever the disk thread is still doing.
            self._disk.submit(self._abandon)

    def _next_batch(self) -> list[_Job]:
        with self._state:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            return batch

    async def _write_batch(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(self._disk, self._begin)
            self._run_jobs(conn, batch)
            await loop.run_in_executor(self._disk, self._commit, conn)
        except sqlite3.Error as error:
            await loop.run_in_executor(self._disk, self._abandon)
            self._settle_all(batch, _translate(error))
            return
        except BaseException as error:
            # Anything else (the drain cancelled at shutdown, a bug): no job waits forever, and
            # the transaction and the turn are given back before the next batch begins.
            self._disk.submit(self._abandon)
            self._settle_all(batch, error)
            if isinstance(error, Exception):
                return
            raise
        self.commits += 1
        self.committed_jobs += len(batch)
        for job in batch:
            job.loop.call_soon_threadsafe(_settle, job)

    def _begin(self) -> sqlite3.Connection:
        """Wait for this process's turn to write (`--workers N` share one file), then BEGIN."""
        if self._writer is None:
            self._writer = connect(self.path)
            self._turn_file = open(self._turn_path, "a")  # noqa: SIM115
        # The kernel wakes the next writer the moment the lock is free, where SQLite's busy
        # handler would sleep and poll. SQLite's own lock still guards the file.
        fcntl.flock(self._turn_file, fcntl.LOCK_EX)
        self._holding = True
        self._writer.execute("BEGIN IMMEDIATE")
        return self._writer

    def _commit(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("COMMIT")
        self._holding = False
        fcntl.flock(self._turn_file, fcntl.LOCK_UN)

    def _abandon(self) -> None:
        """Roll back what was not committed and give the turn back (no-op when neither)."""
        if self._writer is not None and self._writer.in_transaction:
            self._writer.execute("ROLLBACK")
        if self._holding:
            self._holding = False
            fcntl.flock(self._turn_file, fcntl.LOCK_UN)

    @staticmethod
    def _run_jobs(conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Each job in its own savepoint; alone in its batch, a job needs none."""
        tx = SqlTx(conn, DIALECT)
        alone = len(batch) == 1
        for job in batch:
            if not alone:
                conn.execute("SAVEPOINT job")
            try:
                job.outcome = job.work(tx)
                if not alone:
                    conn.execute("RELEASE job")
            except BaseException as error:  # whatever one job raises, it fails alone
                job.failure = _translate(error) if isinstance(error, sqlite3.Error) else error
                conn.execute("ROLLBACK" if alone else "ROLLBACK TO job")
                if not alone:
                    conn.execute("RELEASE job")

    @staticmethod
    def _settle_all(batch: list[_Job], failure: BaseException) -> None:
        for job in batch:
            job.failure = failure
            job.loop.call_soon_threadsafe(_settle, job)
