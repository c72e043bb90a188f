"""SQLite backend: one file, WAL with synchronous=FULL, and group commit.

Writes from every request of a process go to one writer thread. It takes whatever work is
queued, runs each piece in its own SAVEPOINT inside one `BEGIN IMMEDIATE` transaction, commits
once (one fsync for the lot), and only then answers each request. A piece that fails is rolled
back to its savepoint alone. Several processes on one file are serialised by SQLite's write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
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
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._opened: list[sqlite3.Connection] = []
        self.commits = 0  # group commits made by the writer, and the units of work they carried
        self.committed_jobs = 0

    # the contract

    def migrate(self) -> list[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        applied = apply_migrations(yoyo_url=self.url, backend_name="sqlite")
        connect(self.path).close()  # leaves the file in WAL mode
        return applied

    def transact(self, work: Callable[[Tx], T]) -> T:
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
        self._ensure_writer()
        self._queue.put(job)
        result: T = await job.future
        return result

    async def read(self, work: Callable[[Tx], T]) -> T:
        # Reads are short indexed lookups: running them on the event loop's own connection is
        # cheaper than a hop to a thread. WAL lets them run beside the writer.
        conn = self._connection()
        conn.execute("BEGIN")
        try:
            return work(SqlTx(conn, DIALECT))
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                self._queue.put(None)
                self._writer.join()
                self._writer = None
            for conn in self._opened:
                conn.close()
            self._opened.clear()
            self._local = threading.local()

    # internals

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._writer_lock:
                self._opened.append(conn)
        return conn

    def _ensure_writer(self) -> None:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="tally-sqlite-writer", daemon=True
                    )
                    self._writer.start()

    def _write_loop(self) -> None:
        conn = connect(self.path)
        tx = SqlTx(conn, DIALECT)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        self._queue.put(None)
                        break
                    batch.append(job)
                self._commit_batch(conn, tx, batch)
        finally:
            conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, tx: SqlTx, batch: list[_Job]) -> None:
        # Writers of several processes (`--workers N`) take turns on a file lock: the kernel
        # wakes the next one the moment the lock is free, where SQLite's busy handler would
        # sleep and poll. SQLite's own lock still guards the file; this only orders the queue.
        with self._turn():
            self._commit_batch_in_turn(conn, tx, batch)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        with open(f"{self.path}-writer.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit_batch_in_turn(self, conn: sqlite3.Connection, tx: SqlTx, batch: list[_Job]) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            self._fail_all(batch, _translate(error))
            return
        # Alone in its batch, a job needs no savepoint: its failure rolls back the transaction.
        alone = len(batch) == 1
        try:
            for job in batch:
                if not alone:
                    conn.execute("SAVEPOINT job")
                try:
                    job.outcome = job.work(tx)
                    if not alone:
                        conn.execute("RELEASE job")
                except Exception as error:  # one job's failure must not sink the others
                    job.failure = _translate(error) if isinstance(error, sqlite3.Error) else error
                    conn.execute("ROLLBACK" if alone else "ROLLBACK TO job")
                    if not alone:
                        conn.execute("RELEASE job")
            if conn.in_transaction:
                conn.execute("COMMIT")
            self.commits += 1
            self.committed_jobs += len(batch)
        except sqlite3.Error as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._fail_all(batch, _translate(error))
            return
        for job in batch:
            job.loop.call_soon_threadsafe(_settle, job)

    @staticmethod
    def _fail_all(batch: list[_Job], failure: BaseException) -> None:
        for job in batch:
            job.failure = failure
            job.loop.call_soon_threadsafe(_settle, job)
