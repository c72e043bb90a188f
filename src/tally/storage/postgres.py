"""PostgreSQL backend: a pool of connections, one transaction per unit of work, row locks.

Any number of `tally serve` processes may share one database. A member's row is locked
(`SELECT ... FOR UPDATE`) before its balance is read for a change; Idempotency-Keys are claimed
with a transaction-scoped advisory lock, so a concurrent duplicate is told it is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from tally.errors import Unavailable
from tally.ports import Conflict, Tx
from tally.storage.bridge import BridgedConnection, run_in_greenlet
from tally.storage.migrate import apply_migrations
from tally.storage.sql import Connection, Dialect, SqlTx

T = TypeVar("T")

_CONFLICTS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


def _claim_advisory(conn: Connection, program_id: int, key: str) -> bool:
    row = conn.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (f"{program_id}:{key}",)
    ).fetchone()
    return bool(row[0])


DIALECT = Dialect(
    name="postgres",
    placeholder="%s",
    for_update=" FOR UPDATE",
    for_update_of_member=" FOR UPDATE OF m",
    claim_key=_claim_advisory,
)


class PostgresStore:
    """`tally.ports.Store` on a PostgreSQL database.

    The server's reads and writes use psycopg's asyncio driver on the event loop (through
    `tally.storage.bridge`); the command line's `transact` uses the blocking driver.
    """

    # Connections per server process and event loop. Over HTTP on the 2-core benchmark machine
    # 8 beat 16 by 10-20% and 32 did worst (more backends only queue for the same cores); ten
    # processes sharing one PostgreSQL stay under its default 100 connections.
    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        self._pool: ConnectionPool[Any] | None = None
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool[Any]] = {}
        self._pool_size = pool_size

    def migrate(self) -> list[str]:
        yoyo_url = "postgresql+psycopg://" + self.url.split("://", 1)[1]
        return apply_migrations(yoyo_url=yoyo_url, backend_name="postgres")

    def transact(self, work: Callable[[Tx], T]) -> T:
        with _translated(), self._blocking_pool().connection() as conn:
            try:
                # Pipeline mode: statements whose results are not read (BEGIN, the writes,
                # COMMIT) travel together; a read waits only for itself.
                with conn.pipeline():
                    conn.execute("BEGIN")
                    result = work(SqlTx(conn, DIALECT))
                    conn.execute("COMMIT")
                return result
            except BaseException:
                if not conn.closed:
                    conn.execute("ROLLBACK")
                raise

    async def write(self, work: Callable[[Tx], T]) -> T:
        # Pipelined: a write's INSERTs, UPDATEs and COMMIT go in one round trip, which shortens
        # how long the member's row lock is held. Reads gain nothing from it and psycopg's
        # pipeline costs CPU, so they run plain.
        return await self._run(work, "BEGIN", pipelined=True)

    async def read(self, work: Callable[[Tx], T]) -> T:
        return await self._run(
            work, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", pipelined=False
        )

    async def lookup(self, work: Callable[[Tx], T]) -> T:
        """One statement on an autocommit connection: it sees one snapshot by itself, so no
        BEGIN and no COMMIT, one round trip. (Nothing enforces READ ONLY here; `SqlTx` refuses
        a second statement, and the reads that use this path are plain SELECTs.)"""
        pool = await self._pool_for_loop()
        with _translated():
            async with pool.connection() as conn:
                tx = SqlTx(BridgedConnection(conn), DIALECT, one_statement=True)
                return await run_in_greenlet(work, tx)

    async def aclose(self) -> None:
        pool = self._async_pools.pop(asyncio.get_running_loop(), None)
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
                kwargs={"autocommit": True},
                timeout=10,
                open=True,
            )
        return self._pool

    async def _pool_for_loop(self) -> AsyncConnectionPool[Any]:
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            pool = AsyncConnectionPool(
                self.url,
                min_size=2,
                max_size=self._pool_size,
                kwargs={"autocommit": True},
                timeout=10,
                open=False,
            )
            self._async_pools[loop] = pool
            await pool.open()
        return pool

    async def _run(self, work: Callable[[Tx], T], begin: str, *, pipelined: bool) -> T:
        pool = await self._pool_for_loop()
        with _translated():
            async with pool.connection() as conn:
                try:
                    async with conn.pipeline() if pipelined else _nothing():
                        await conn.execute(begin)
                        tx = SqlTx(BridgedConnection(conn), DIALECT)
                        result = await run_in_greenlet(work, tx)
                        await conn.execute("COMMIT")
                    return result
                except BaseException:
                    if not conn.closed:
                        await conn.execute("ROLLBACK")
                    raise


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Driver errors the service understands: lock conflicts (the runner retries those) and a
    lost or unreachable database (`Unavailable`); everything else passes unchanged."""
    try:
        yield
    except _CONFLICTS as error:
        raise Conflict(str(error)) from error
    except (psycopg.OperationalError, PoolTimeout) as error:
        raise Unavailable(
            "The database is unreachable; nothing was changed. Please retry."
        ) from error


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield
