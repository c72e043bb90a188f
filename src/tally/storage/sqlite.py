"""SQLite backend: one file, WAL with synchronous=FULL, and group commit.

Writes from every request of a process are queued. A drain task takes whatever is queued, runs
each piece in its own SAVEPOINT inside one `BEGIN IMMEDIATE` transaction, commits once (one
fsync for the lot), and only then answers each request. A piece that fails is rolled back to its
savepoint alone.

The pieces run on the event loop's thread: they are short and CPU-bound, and a separate writer
thread would spend as long waiting for the GIL as working. Only what waits on the disk or on
another process (taking the write turn, COMMIT's fsync) goes to a helper thread, so the loop
keeps serving requests meanwhile. Several processes on one file take turns on a file lock.

When the database fails, each request learns whether its write happened: SQLite commits only at
COMMIT, so a failure before it (a lock held past the busy timeout, a full disk, a write error)
left nothing behind; only a failure inside COMMIT after its writes (a failed fsync) leaves the
outcome unknown, and a retry with the same Idempotency-Key settles it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import sqlite3
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tally.config import Settings
from tally.errors import Unavailable
from tally.ports import Tx
from tally.storage.migrate import apply_migrations
from tally.storage.sql import Connection, Dialect, SqlTx

T = TypeVar("T")

log = logging.getLogger("tally.storage")

MAX_BATCH = 512
CACHE_KIB = 16 * 1024  # each connection's page cache (see `connect`)

# SQLite result codes (https://www.sqlite.org/rescode.html); the low byte is the primary code.
_BUSY, _LOCKED_CODE, _IOERR, _FULL = 5, 6, 10, 13
_IOERR_WRITE = _IOERR | (3 << 8)


def _always_claimed(conn: Connection, program_id: int, key: str) -> bool:
    # Writers are serialised by the database lock, so no other transaction can hold the key.
    return True


def _all_claimed(conn: Connection, program_id: int, keys: list[str]) -> bool:
    return True


DIALECT = Dialect(
    name="sqlite",
    placeholder="?",
    for_update="",
    for_update_of_member="",
    claim_key=_always_claimed,
    claim_keys=_all_claimed,
    feed_horizon="1",  # every committed row is final: one writer at a time
)


def path_from_url(url: str) -> Path:
    """`sqlite:///relative.db` or `sqlite:////absolute.db` → the file's path."""
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    return Path(url[len("sqlite:///") :])


def connect(path: Path, *, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    # Deleted and overwritten content is zeroed, whole freed pages too (a large metadata's
    # overflow pages): erased personal data leaves the file (docs/api.md, "Members").
    conn.execute("PRAGMA secure_delete = ON")
    # A page cache of up to 16 MiB per connection instead of SQLite's 2 MiB: an award updates
    # ten indexes of `entries` and five of `lots`, and with 2 MiB their pages are read back
    # from the operating system on nearly every write once a ledger has some history. On the
    # bench's ledger (bench/README.md, 2026-12-06): award +9 to 18%, balance +3 to 9%, about
    # 18 MiB more resident memory per server process.
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
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


_LOCKED = (
    "The database is locked by another writer for longer than its busy timeout; nothing was "
    "changed. Please retry."
)
_FULL_DISK = (
    "The database is full (no space left for it to grow); the write did not happen. Please "
    "retry once space has been freed."
)
_NOT_WRITTEN = "The database cannot be written right now; nothing was changed. Please retry."
_NOT_READ = "The database cannot be read right now; nothing was changed. Please retry."
_MAYBE_COMMITTED = (
    "The database failed while committing: the write may or may not have been applied. Retry "
    "with the same Idempotency-Key to settle it."
)


def _translate(error: Exception, path: Path, *, committing: bool = False) -> BaseException:
    """A database-level failure as `Unavailable`, saying whether the write happened; the
    driver's text goes to the server's log. Anything else (a constraint, a bug) passes as is.

    `committing`: it was COMMIT that failed, after the transaction's writes."""
    if isinstance(error, OSError):  # the write turn's lock file
        log.warning("SQLite write turn failed: %s", error)
        return Unavailable(_MAYBE_COMMITTED if committing else _NOT_WRITTEN)
    if not isinstance(error, sqlite3.OperationalError):
        return error
    log.warning("SQLite %s failed: %s", "COMMIT" if committing else "write", error)
    code = error.sqlite_errorcode
    if code & 0xFF in (_BUSY, _LOCKED_CODE):
        return Unavailable(_LOCKED)
    # A write that cannot extend a file: SQLite says SQLITE_FULL when the disk is out of space,
    # and a write error when a file reached the process's size limit (EFBIG).
    if code & 0xFF == _FULL or (code == _IOERR_WRITE and _out_of_room(path)):
        return Unavailable(_FULL_DISK)
    # Inside COMMIT, a write error means the commit record was never completely written; any
    # other I/O error (a failed fsync) may come after it was, so the write may have happened.
    if committing and code & 0xFF == _IOERR and code != _IOERR_WRITE:
        return Unavailable(_MAYBE_COMMITTED)
    return Unavailable(_NOT_WRITTEN)


def _translate_read(error: sqlite3.Error) -> BaseException:
    if not isinstance(error, sqlite3.OperationalError):
        return error
    log.warning("SQLite read failed: %s", error)
    return Unavailable(_NOT_READ)


def _out_of_room(path: Path) -> bool:
    """Whether the database's files cannot grow: its disk is (nearly) full, or a file of it has
    reached this process's file size limit (RLIMIT_FSIZE)."""
    margin = 1 << 16  # more than one WAL frame
    try:
        disk = os.statvfs(path.parent)
        if disk.f_bavail * disk.f_frsize < margin:
            return True
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit == resource.RLIM_INFINITY:
            return False
        files = [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-journal")]
        return any(f.exists() and f.stat().st_size + margin > limit for f in files)
    except OSError:
        return False


class SqliteStore:
    """`tally.ports.Store` on a SQLite file."""

    long_work_in_thread = True

    def __init__(self, url: str, *, busy_timeout_ms: int | None = None) -> None:
        self.url = url
        self.path = path_from_url(url)
        if busy_timeout_ms is None:
            busy_timeout_ms = Settings.from_env().sqlite_busy_timeout_ms
        self.busy_timeout_ms = busy_timeout_ms
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
        self._connect().close()  # leaves the file in WAL mode
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
                raise _translate(error, self.path) from error
            try:
                result = work(SqlTx(conn, DIALECT))
            except BaseException:
                _roll_back(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as error:
                _roll_back(conn)
                raise _translate(error, self.path, committing=True) from error
            return result

    async def write(self, work: Callable[[Tx], T], *, lane: Hashable | None = None) -> T:
        # Every write of the process already goes in one group commit: lanes change nothing.
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
        try:
            return work(SqlTx(self._connection(), DIALECT, one_statement=True))
        except sqlite3.OperationalError as error:
            raise _translate_read(error) from error

    async def read(self, work: Callable[[Tx], T]) -> T:
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                return work(SqlTx(conn, DIALECT))
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.OperationalError as error:
            raise _translate_read(error) from error

    async def aclose(self) -> None:
        """Let the group commit in progress, and whatever is queued behind it, finish: a server
        shutting down answers every write it took (the connections close in `close`)."""
        drainer = self._drainer
        if drainer is not None and drainer.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({drainer})

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

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, busy_timeout_ms=self.busy_timeout_ms)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
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
        """One transaction for the batch; each job is answered once it is known whether its
        write happened (after COMMIT, or after the failure that undid the batch)."""
        loop = asyncio.get_running_loop()
        committing = False
        try:
            conn = await loop.run_in_executor(self._disk, self._begin)
            self._run_jobs(conn, batch)
            committing = True
            await loop.run_in_executor(self._disk, self._commit, conn)
        except (sqlite3.Error, OSError) as error:
            await loop.run_in_executor(self._disk, self._abandon)
            self._settle_all(batch, _translate(error, self.path, committing=committing))
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
            self._writer = self._connect()
        if self._turn_file is None:
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
        """Roll back what was not committed and give the turn back (no-op when neither). A
        writer that cannot even roll back is closed: the next batch opens a fresh one."""
        if self._writer is not None and not _roll_back(self._writer):
            with contextlib.suppress(sqlite3.Error):
                self._writer.close()
            self._writer = None
        if self._holding:
            self._holding = False
            fcntl.flock(self._turn_file, fcntl.LOCK_UN)

    def _run_jobs(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Each job in its own savepoint; alone in its batch, a job needs none.

        Raises `sqlite3.Error` when the transaction itself is gone (SQLite rolls all of it back
        on a full disk or an I/O error): then no job of the batch took effect."""
        tx = SqlTx(conn, DIALECT)
        alone = len(batch) == 1
        for job in batch:
            if not alone:
                conn.execute("SAVEPOINT job")
            try:
                job.outcome = job.work(tx)
                if not alone:
                    conn.execute("RELEASE job")
            except sqlite3.Error as error:
                if not conn.in_transaction:
                    raise
                job.failure = _translate(error, self.path)
                _undo_job(conn, alone=alone)
            except BaseException as error:  # whatever one job raises, it fails alone
                job.failure = error
                _undo_job(conn, alone=alone)

    @staticmethod
    def _settle_all(batch: list[_Job], failure: BaseException) -> None:
        for job in batch:
            job.failure = failure
            job.loop.call_soon_threadsafe(_settle, job)


def _undo_job(conn: sqlite3.Connection, *, alone: bool) -> None:
    """Undo one failed job: its savepoint, or the whole transaction when it ran alone."""
    if alone:
        conn.execute("ROLLBACK")
    else:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")


def _roll_back(conn: sqlite3.Connection) -> bool:
    """ROLLBACK if a transaction is open (SQLite may have rolled it back already); False when
    even that failed."""
    if not conn.in_transaction:
        return True
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as error:
        log.warning("SQLite ROLLBACK failed: %s", error)
        return False
    return True
