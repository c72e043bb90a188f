"""PostgreSQL backend: a pool of connections, one transaction per unit of work, row locks.

Any number of `tally serve` processes may share one database. A member's row is locked
(`SELECT ... FOR UPDATE`) before its balance is read for a change; Idempotency-Keys are claimed
with a transaction-scoped advisory lock, so a concurrent duplicate is told it is in progress.

A database that cannot be reached becomes `Unavailable`, saying whether the write happened:
before COMMIT was sent nothing was; if the connection is lost once it was sent, nobody here can
know, and a retry with the same Idempotency-Key settles it.

Writes to one member commit together (`write`'s `lane`): while one of the server's transactions
is at work on a lane, the writes that arrive for it wait, and then go in one transaction, so that
a hot member's awards take its row lock and flush the WAL once per batch instead of once each. In
that transaction a member's writes run one after the other, each in its own SAVEPOINT, and the
writes of different members side by side, sharing their round trips. One-statement reads
(`lookup`) that find every connection busy wait in read lanes and share round trips the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from tally.errors import Unavailable
from tally.ports import Conflict, Tx
from tally.storage.bridge import run_in_greenlet, run_side_by_side
from tally.storage.migrate import apply_migrations
from tally.storage.pipeline import PREPARE_AFTER, Pipe, Prepared
from tally.storage.sql import Connection, Dialect, SqlTx

T = TypeVar("T")

log = logging.getLogger("tally.storage")

_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)

# A statement is prepared once a connection has run it a few times (by `tally.storage.pipeline`
# for the server, by psycopg for the command line), in the server session: the server parses and
# plans it no more (over HTTP on the bench machine, unprepared awards and balance reads ran about
# a quarter slower), which is right only while that session is the connection's own. Behind
# PgBouncer in transaction mode, or any pooler sharing server sessions among its clients, the
# next transaction may run in another session, where the name is unknown or names another
# client's statement, which would run in its place (about half the API answered 500 there). Such
# a pooler answers a connection's start-up with a process id of its own (it routes cancel
# requests itself), so a connection prepares only when the server's `pg_backend_pid()` is the one
# its start-up gave: straight to PostgreSQL, never behind a pooler, with no setting either way.
# Nothing else Tally does outlives a transaction: its locks are row locks and transaction-scoped
# advisory locks, and it never SETs, LISTENs or keeps a cursor or a temporary table.
_CONNECTION: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
_SERVER_PID = "SELECT pg_backend_pid()"


def prepare_if_own_session(conn: psycopg.Connection[Any]) -> None:
    """Let a new connection (made unprepared) prepare statements if its server session is its
    own; the blocking pool's `configure`."""
    _set_preparing(conn, conn.execute(_SERVER_PID).fetchone())


async def _prepare_if_own_session_async(conn: psycopg.AsyncConnection[Any]) -> None:
    cursor = await conn.execute(_SERVER_PID)
    _set_preparing(conn, await cursor.fetchone())


def _set_preparing(conn: psycopg.BaseConnection[Any], server_pid: tuple[int] | None) -> None:
    if server_pid is not None and server_pid[0] == conn.info.backend_pid:
        conn.prepare_threshold = PREPARE_AFTER


# Writes in one lane's transaction at most. PostgreSQL keeps a transaction's first 64
# subtransactions (one per SAVEPOINT that writes) in shared memory; past that, every snapshot
# taken by any session looks them up on disk (pg_subtrans).
MAX_BATCH = 32

# Write lanes per process and event loop (`PostgresStore.write`), each one transaction at a time:
# the fewer, the more writes each transaction carries, in the same two round trips (a wave,
# `_side_by_side`), and the less CPU each costs here and in the database. Two rather than one, so
# that a lane held up (by another server's row lock, a slow disk) leaves the other writing. On
# the bench (64 clients, random members) 2 lanes gave award 4,470 to 4,650/s, 8 gave 3,540 to
# 3,850/s, 1 gave 4,770/s (bench/README.md, "Two write lanes instead of eight").
WRITE_LANES = 2

# Read lanes per process and event loop (`PostgresStore.lookup`): lookups that find every
# connection busy wait in one, and go together in its next round trip.
READ_LANES = 4

# How long a request waits for a pooled connection: normally, and once the database was found
# unreachable (until a request succeeds again), so that clients get their 503 in a second.
POOL_WAIT = 10.0
OUTAGE_POOL_WAIT = 1.0
# A lost connection is replaced with retries one, two... seconds apart, given up after this;
# then the next request asks for a new one at once. Without it the retries, spaced ever wider
# (up to minutes), kept a recovered database waiting.
RECONNECT_FOR = 2.0
# How long a cancelled request waits for the server to cancel its statement.
CANCEL_WAIT = 1.0


def _claim_advisory(conn: Connection, program_id: int, key: str) -> bool:
    row = conn.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (f"{program_id}:{key}",)
    ).fetchone()
    return bool(row[0])


def _claim_advisory_all(conn: Connection, program_id: int, keys: list[str]) -> bool:
    row = conn.execute(
        "SELECT bool_and(pg_try_advisory_xact_lock(hashtextextended(k, 0))) "
        "FROM unnest(%s::text[]) AS k",
        ([f"{program_id}:{key}" for key in keys],),
    ).fetchone()
    return row[0] is not False


# The events feed shows rows whose writing transaction is below this (`sql/events.py`): the
# oldest transaction still running when this statement's snapshot was taken, leaving out those
# known not to be Tally's, else the next transaction id. Known not to be Tally's: running in
# another database of the server (a long one there must not hold our feed back), or in an
# autovacuum worker (its ANALYZE takes a transaction id, for as long as the table takes). Only
# such a transaction is left out: one of ours that ends between the snapshot and the read of
# `pg_stat_activity` is simply kept (the feed waits a moment), never skipped. `backend_xid` is
# the 32-bit form of an id; transactions running at once never share one.
#
# They are known by what `pg_stat_activity` shows: read by `_NOT_TALLYS` before the snapshot
# (the parameter), and by the expression itself after it. Either alone misses some. Read only
# after the snapshot, each one that ended in between was no longer seen, and held the feed
# back: on a server busy with other databases, most reads of the feed after a position (then
# the second statement of a REPEATABLE READ transaction) left out events that had committed
# before the request. Read before, only a transaction that took its id since is missed, and
# that id is newer than every event committed before the read.
_NOT_TALLYS = (
    "FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
    "AND (datname <> current_database() OR backend_type = 'autovacuum worker')"
)
_FEED_HORIZON = (
    "COALESCE((SELECT min(x::text::bigint) FROM pg_snapshot_xip(pg_current_snapshot()) x "
    "WHERE mod(x::text::bigint, 4294967296) <> ALL (?::bigint[]) "
    "AND mod(x::text::bigint, 4294967296) NOT IN "
    f"(SELECT backend_xid::text::bigint {_NOT_TALLYS})), "
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
)
_FOREIGN_XIDS = f"SELECT backend_xid::text::bigint {_NOT_TALLYS}"

DIALECT = Dialect(
    name="postgres",
    placeholder="%s",
    for_update=" FOR UPDATE",
    for_update_of_member=" FOR UPDATE OF m",
    claim_key=_claim_advisory,
    claim_keys=_claim_advisory_all,
    feed_horizon=_FEED_HORIZON,
    skip_locked=" FOR UPDATE SKIP LOCKED",
    foreign_xids=_FOREIGN_XIDS,
    bytes_contain="position(? in {column}) > 0",
)


class PostgresStore:
    """`tally.ports.Store` on a PostgreSQL database.

    The server's reads and writes run on the event loop: psycopg's asyncio connections, driven
    through libpq's pipeline (`tally.storage.pipeline`) by units of work in greenlets
    (`tally.storage.bridge`); the command line's `transact` uses psycopg's blocking driver.
    """

    long_work_in_thread = False

    # Connections per server process and event loop. Over HTTP on the 2-core benchmark machine
    # 8 beat 16 by 10-20% and 32 did worst (more backends only queue for the same cores); ten
    # processes sharing one PostgreSQL stay under its default 100 connections.
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self._pool: ConnectionPool[Any] | None = None
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool[Any]] = {}
        # In front of each pool, one permit per connection (see `_connection`).
        self._gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._pool_size = pool_size
        self._reachable = True  # False from a lost connection until a request succeeds
        self._lanes: dict[asyncio.AbstractEventLoop, list[_Lane]] = {}
        self._read_lanes: dict[asyncio.AbstractEventLoop, list[_Lane]] = {}
        self.batches = 0  # transactions that carried more than one lane's write, and those writes
        self.batched_writes = 0
        self.round_trips = 0  # of the server's units of work (`Pipe`), all together
        # What each of the server's connections has prepared (`tally.storage.pipeline`).
        self._prepared: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], Prepared] = (
            weakref.WeakKeyDictionary()
        )

    def migrate(self) -> list[str]:
        yoyo_url = "postgresql+psycopg://" + self.url.split("://", 1)[1]
        return apply_migrations(yoyo_url=yoyo_url, backend_name="postgres")

    def transact(self, work: Callable[[Tx], T]) -> T:
        commit = _Commit()
        with self._translated(commit), self._blocking_pool().connection() as conn:
            try:
                # Pipeline mode: statements whose results are not read (BEGIN, the writes,
                # COMMIT) travel together; a read waits only for itself.
                with conn.pipeline():
                    conn.execute("BEGIN")
                    result = work(SqlTx(conn, DIALECT))
                    commit.sent = True
                    conn.execute("COMMIT")
                return result
            except BaseException:
                if not conn.closed:
                    conn.execute("ROLLBACK")
                raise

    async def write(self, work: Callable[[Tx], T], *, lane: Hashable | None = None) -> T:
        # A write's INSERTs, UPDATEs and COMMIT go in one round trip (`tally.storage.pipeline`),
        # which shortens how long the member's row lock is held.
        if lane is None:
            return await self._run(work, "BEGIN", _Commit())
        # A lane runs one transaction at a time, on one of the pool's connections: writes to
        # its members that arrive meanwhile go together in the next (`_drain`).
        lanes = _lanes_of(self._lanes, min(WRITE_LANES, self._pool_size))
        queue = lanes[hash(lane) % len(lanes)]
        outcome = await self._in_lane(
            queue, _Job(work, lane), self._write_alone, self._write_together
        )
        if outcome is _ALONE:
            return await self._run(work, "BEGIN", _Commit())
        result: T = outcome
        return result

    async def read(self, work: Callable[[Tx], T]) -> T:
        return await self._run(work, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", None)

    async def lookup(self, work: Callable[[Tx], T]) -> T:
        """One statement on an autocommit connection: it sees one snapshot by itself, so no
        BEGIN and no COMMIT, one round trip. (Nothing enforces READ ONLY here; `SqlTx` refuses
        a second statement, and the reads that use this path are plain SELECTs.)

        While every connection is busy, lookups wait in a read lane instead, and a lane's next
        round trip carries all of them side by side (`_read_together`)."""
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None or not gate.locked():
            return await self._run(work, None, None)
        lanes = _lanes_of(self._read_lanes, READ_LANES)
        queue = min(lanes, key=lambda lane: len(lane.pending))
        outcome = await self._in_lane(
            queue, _Job(work, None), self._read_alone, self._read_together
        )
        if outcome is _ALONE:
            return await self._run(work, None, None)
        result: T = outcome
        return result

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        # The lanes' transactions in progress, and what is queued behind them, finish first.
        lanes = self._lanes.pop(loop, []) + self._read_lanes.pop(loop, [])
        drainers = {lane.drainer for lane in lanes if lane.drainer}
        if drainers:
            await asyncio.wait(drainers)
        self._gates.pop(loop, None)
        pool = self._async_pools.pop(loop, None)
        if pool is not None:
            await pool.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _blocking_pool(self) -> ConnectionPool[Any]:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=4,
                kwargs=_CONNECTION,
                configure=prepare_if_own_session,
                timeout=POOL_WAIT,
                open=True,
            )
        return self._pool

    async def _pool_for_loop(self) -> AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            pool = AsyncConnectionPool(
                self.url,
                min_size=min(2, self._pool_size),
                max_size=self._pool_size,
                kwargs=_CONNECTION,
                configure=_prepare_if_own_session_async,
                timeout=POOL_WAIT,
                reconnect_timeout=RECONNECT_FOR,
                open=False,
            )
            self._async_pools[loop] = pool
            self._gates[loop] = asyncio.Semaphore(self._pool_size)
            await pool.open()
        return pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection. Requests beyond the pool's size queue here, on a semaphore,
        rather than in the pool: psycopg_pool starts a task for every client it makes wait
        (about a fifth of a balance read's CPU when 32 requests shared 8 connections)."""
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop) or await self._pool_for_loop()
        gate = self._gates[loop]
        wait = self._pool_wait()
        if gate.locked():
            try:
                async with asyncio.timeout(wait):
                    await gate.acquire()
            except TimeoutError:
                raise PoolTimeout(f"no connection free after {wait:.2f} s") from None
        else:
            await gate.acquire()
        try:
            # getconn/putconn rather than `pool.connection()`, whose `async with conn` would
            # COMMIT or ROLLBACK: `_on_pipe` has already ended the transaction either way.
            conn = await pool.getconn(timeout=wait)
            try:
                yield conn
            finally:
                await pool.putconn(conn)
        finally:
            gate.release()

    async def _run(self, work: Callable[[Tx], T], begin: str | None, commit: _Commit | None) -> T:
        """`work` in a transaction opened by `begin` (None: one statement, no transaction);
        `commit` is None for reads."""

        async def unit(pipe: Pipe) -> T:
            if begin is not None:
                pipe.send(begin, (), None)
            result = await run_in_greenlet(work, SqlTx(pipe, DIALECT, one_statement=begin is None))
            if commit is not None:
                commit.sent = True
            if begin is not None:
                pipe.send("COMMIT", (), None)
            return result

        return await self._on_pipe(unit, commit)

    async def _on_pipe(self, unit: Callable[[Pipe], Awaitable[T]], commit: _Commit | None) -> T:
        """`unit` on a pooled connection's pipe, then every answer read: the connection goes
        back to the pool clean, or is abandoned (`_abandon`) when anything failed."""
        with self._translated(commit):
            async with self._connection() as conn:
                pipe = Pipe(conn, self._prepared_on(conn))
                pipe.open()
                try:
                    result = await unit(pipe)
                    await pipe.sync()
                except BaseException as error:
                    await _abandon(conn, pipe, error)
                    raise
                finally:
                    self.round_trips += pipe.round_trips
                pipe.close()
        self._reachable = True
        return result

    async def _in_lane(
        self,
        lane: _Lane,
        job: _Job,
        alone: Callable[[_Job], Awaitable[None]],
        together: Callable[[list[_Job]], Awaitable[None]],
    ) -> Any:
        """`job`'s outcome, once `lane`'s drainer (started if idle) has run it, or `_ALONE`:
        run it again by yourself."""
        lane.pending.append(job)
        if lane.drainer is None:
            lane.drainer = asyncio.get_running_loop().create_task(
                self._drain(lane, alone, together)
            )
        return await job.future

    async def _drain(
        self,
        lane: _Lane,
        alone: Callable[[_Job], Awaitable[None]],
        together: Callable[[list[_Job]], Awaitable[None]],
    ) -> None:
        try:
            while lane.pending:
                queued = lane.pending[:MAX_BATCH]
                del lane.pending[:MAX_BATCH]
                batch = [job for job in queued if not job.future.done()]  # not cancelled
                if len(batch) == 1:
                    await alone(batch[0])
                elif batch:
                    await together(batch)
        finally:
            lane.drainer = None
            for job in lane.pending:  # cancelled (the loop is closing): nobody runs them
                job.future.cancel()
            lane.pending.clear()

    async def _read_alone(self, job: _Job) -> None:
        await self._alone(job, None)

    async def _write_alone(self, job: _Job) -> None:
        await self._alone(job, _Commit())

    async def _alone(self, job: _Job, commit: _Commit | None) -> None:
        try:
            outcome = await self._run(job.work, None if commit is None else "BEGIN", commit)
        except asyncio.CancelledError:
            job.future.cancel()
            raise
        except BaseException as error:  # noqa: BLE001 - the job's, handed to its request
            _settle(job, error=error)
        else:
            _settle(job, outcome)

    async def _write_together(self, batch: list[_Job]) -> None:
        """The batch in one transaction; each job is answered after COMMIT. A job that fails
        is undone alone; when the transaction itself fails (a statement refused, a deadlock),
        nothing of the batch happened, and each job runs again in a transaction of its own
        (which meets the failure again, where it belongs, or not at all)."""
        commit = _Commit()
        try:
            await self._run_together(batch, commit)
        except Unavailable as error:
            if commit.sent or not self._reachable:
                # Once COMMIT is sent the batch may have happened, and a lost database would
                # only be waited for again: each request is told what is known.
                for job in batch:
                    _settle(job, error=error)
                return
            for job in batch:  # refused, the database still there: try each by itself
                _settle(job, _ALONE)
            return
        except asyncio.CancelledError:
            for job in batch:
                job.future.cancel()
            raise
        except Exception as error:
            log.info(
                "PostgreSQL: a batch of %d writes runs again one by one: %s",
                len(batch),
                _first_line(error),
            )
            for job in batch:
                _settle(job, _ALONE)
            return
        self.batches += 1
        self.batched_writes += len(batch)
        for job in batch:
            if job.failure is not None:
                _settle(job, error=job.failure)
            elif job.alone:
                _settle(job, _ALONE)
            else:
                _settle(job, job.outcome)

    async def _read_together(self, batch: list[_Job]) -> None:
        """Lookups side by side on one connection, with no BEGIN: their statements go in one
        round trip (PostgreSQL runs statements sent together before a Sync as one implicit
        transaction, each with a snapshot of its own at READ COMMITTED, as alone). If that
        fails as a whole, each lookup runs again by itself and meets its own outcome."""

        async def unit(pipe: Pipe) -> None:
            calls = [
                functools.partial(job.work, SqlTx(pipe, DIALECT, one_statement=True))
                for job in batch
            ]
            outcomes = await run_side_by_side(calls)
            for job, (result, error) in zip(batch, outcomes, strict=True):
                if isinstance(error, psycopg.Error | asyncio.CancelledError):
                    raise error  # the round trip's failure, not the lookup's own
                job.outcome, job.failure = result, error

        try:
            await self._on_pipe(unit, None)
        except asyncio.CancelledError:
            for job in batch:
                job.future.cancel()
            raise
        except Exception as error:
            lost = isinstance(error, Unavailable) and not self._reachable
            for job in batch:  # a lost database is not waited for again; else each alone
                if lost:
                    _settle(job, error=error)
                else:
                    _settle(job, _ALONE)
            return
        for job in batch:
            if job.failure is not None:
                _settle(job, error=job.failure)
            else:
                _settle(job, job.outcome)

    async def _run_together(self, batch: list[_Job], commit: _Commit) -> None:
        async def unit(pipe: Pipe) -> None:
            pipe.send("BEGIN", (), None)
            for wave in _waves(batch):
                if len(wave) == 1:
                    await _one_of_batch(pipe, wave[0])
                else:
                    await _side_by_side(pipe, wave)
            commit.sent = True
            pipe.send("COMMIT", (), None)

        await self._on_pipe(unit, commit)

    def _prepared_on(self, conn: psycopg.AsyncConnection[Any]) -> Prepared:
        prepared = self._prepared.get(conn)
        if prepared is None:
            # The pool's `configure` allowed preparing if the session is the connection's own.
            prepared = self._prepared[conn] = Prepared(conn.prepare_threshold is not None)
        return prepared

    def _pool_wait(self) -> float:
        return POOL_WAIT if self._reachable else OUTAGE_POOL_WAIT

    @contextlib.contextmanager
    def _translated(self, commit: _Commit | None) -> Iterator[None]:
        """Driver errors the service understands: lock conflicts (the runner retries those) and
        a lost or unreachable database (`Unavailable`, saying whether a write happened);
        everything else passes unchanged. `commit` is None for reads."""
        try:
            yield
        except _CONFLICTS as error:
            raise Conflict(str(error)) from error
        except PoolTimeout as error:
            self._reachable = False
            log.warning("PostgreSQL: no connection: %s", error)
            raise Unavailable(_NOT_APPLIED) from error
        except psycopg.OperationalError as error:
            lost = _connection_lost(error)
            if lost:
                self._reachable = False
            log.warning("PostgreSQL: %s", _first_line(error))
            if commit is not None and commit.sent and lost:
                raise Unavailable(_UNKNOWN) from error
            raise Unavailable(_NOT_APPLIED if lost else _REFUSED) from error


@dataclass(slots=True)
class _Job:
    """A write or a lookup waiting in its lane, and once run with others, how it went."""

    work: Callable[[Tx], Any]
    member: Hashable  # a write's lane key: the one member it locks
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    outcome: Any = None
    failure: BaseException | None = None
    alone: bool = False  # undone with others of its wave: to run again by itself


@dataclass(slots=True)
class _Lane:
    pending: list[_Job] = field(default_factory=list)
    drainer: asyncio.Task[None] | None = None


def _lanes_of(lanes: dict[asyncio.AbstractEventLoop, list[_Lane]], count: int) -> list[_Lane]:
    """The running event loop's lanes in `lanes`, `count` of them made on first use."""
    loop = asyncio.get_running_loop()
    mine = lanes.get(loop)
    if mine is None:
        mine = lanes[loop] = [_Lane() for _ in range(count)]
    return mine


def _waves(batch: list[_Job]) -> list[list[_Job]]:
    """The batch in waves that run one after the other, each with at most one job per member:
    a member's jobs keep their order, one per wave, and the jobs of a wave run side by side,
    in the order of their members (`_lock_order`)."""
    waves: list[list[_Job]] = []
    seen: dict[Hashable, int] = {}
    for job in batch:
        index = seen.get(job.member, 0)
        seen[job.member] = index + 1
        if index == len(waves):
            waves.append([])
        waves[index].append(job)
    for wave in waves:
        # Every server takes a wave's row locks in one order (the first wave takes all the
        # batch's), so batches of two servers that share members queue instead of deadlocking.
        wave.sort(key=_lock_order)
    return waves


def _lock_order(job: _Job) -> str:
    """Where a job's member comes in the one order of locks: by its lane key, whatever the
    key's type, the same in every process."""
    return repr(job.member)


async def _one_of_batch(pipe: Pipe, job: _Job) -> None:
    """One job of a batch, in its own SAVEPOINT: if it fails, it alone is undone."""
    pipe.send("SAVEPOINT job", (), None)
    try:
        job.outcome = await run_in_greenlet(job.work, SqlTx(pipe, DIALECT))
    except (psycopg.Error, asyncio.CancelledError):
        raise  # the transaction's failure, not the job's own
    except BaseException as error:  # noqa: BLE001 - it fails alone
        job.failure = error
        pipe.send("ROLLBACK TO SAVEPOINT job", (), None)
    pipe.send("RELEASE SAVEPOINT job", (), None)


async def _side_by_side(pipe: Pipe, wave: list[_Job]) -> None:
    """Jobs for different members side by side (`run_side_by_side`): each runs until it needs an
    answer, and one round trip answers them all, so that a wave of awards costs the round trips
    of one (the members' reads, then the writes with the next wave's reads or `COMMIT`).

    Their statements interleave, so a SAVEPOINT per job cannot undo one alone. A job that fails
    before it wrote anything needs no undoing (its reads and row locks stay until `COMMIT`,
    harmless); if one fails after writing, the whole wave goes back to its SAVEPOINT, the failed
    jobs answer their errors (nothing of them happened), and the others run again each by
    itself."""
    pipe.send("SAVEPOINT wave", (), None)
    views = [_JobsView(pipe) for _ in wave]
    calls = [
        functools.partial(job.work, SqlTx(view, DIALECT))
        for job, view in zip(wave, views, strict=True)
    ]
    outcomes = await run_side_by_side(calls)
    undo = False
    for job, view, (result, error) in zip(wave, views, outcomes, strict=True):
        if isinstance(error, psycopg.Error | asyncio.CancelledError):
            raise error  # the transaction's failure, not the job's own
        if error is None:
            job.outcome = result
        else:
            job.failure = error
            undo = undo or view.wrote
    if undo:
        pipe.send("ROLLBACK TO SAVEPOINT wave", (), None)
        for job in wave:
            job.alone = job.failure is None
    pipe.send("RELEASE SAVEPOINT wave", (), None)


class _JobsView:
    """One job's way to the pipe it shares with its wave: the same statements, noting whether
    any of them writes."""

    __slots__ = ("_pipe", "wrote")

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe
        self.wrote = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not self.wrote and not _only_reads(sql):
            self.wrote = True
        return self._pipe.execute(sql, params)

    def cursor(self) -> _JobsView:
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.wrote = True
        self._pipe.executemany(sql, rows)


def _only_reads(sql: str) -> bool:
    """Whether a statement only reads (and may lock what it reads): a plain SELECT."""
    return sql.startswith("SELECT")


# A job's answer meaning: run alone, in a transaction of your own (its batch failed as a whole).
_ALONE = object()


def _settle(job: _Job, outcome: Any = None, *, error: BaseException | None = None) -> None:
    if job.future.done():  # its request was cancelled
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(outcome)


class _Commit:
    """Whether a write's COMMIT has been sent: from then on a lost connection leaves its outcome
    unknown."""

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent = False


def _connection_lost(error: psycopg.Error) -> bool:
    """The connection broke or the server ended the session (no answer to what was sent), as
    opposed to the server refusing a statement, which aborts the transaction."""
    state = error.sqlstate
    return state is None or state.startswith(("08", "57P"))


_NOT_APPLIED = "The database is unreachable; nothing was changed. Please retry."
_REFUSED = "The database could not complete the request; nothing was changed. Please retry."
_UNKNOWN = (
    "The connection to the database was lost during COMMIT: the write may or may not have been "
    "applied. Retry with the same Idempotency-Key to settle it."
)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


async def _abandon(conn: psycopg.AsyncConnection[Any], pipe: Pipe, error: BaseException) -> None:
    """Leave a unit of work that failed with `error` (a statement refused, or the work itself
    refused: a rule, an overdraw): read what it left unread, roll its transaction back and leave
    pipeline mode, so the pool can hand the connection out again. Close the connection instead,
    so the pool replaces it, when it is lost, or when a wait on it was cancelled (a statement may
    still be running: it is cancelled first)."""
    try:
        if not conn.closed and pipe.usable():
            if isinstance(error, asyncio.CancelledError):
                with contextlib.suppress(Exception):
                    await conn.cancel_safe(timeout=CANCEL_WAIT)
            else:
                # The work's statements first: after a failed one the server skips the rest up
                # to the Sync, and would skip a ROLLBACK sent with them.
                with contextlib.suppress(psycopg.DatabaseError):
                    await pipe.sync()
                if pipe.in_transaction():
                    pipe.send("ROLLBACK", (), None)
                    await pipe.sync()
                if pipe.finished():
                    pipe.close()
                    return
    except Exception:  # noqa: S110 - the connection is closed below; the work's error stands
        pass
    except BaseException:
        await conn.close()
        raise
    await conn.close()
