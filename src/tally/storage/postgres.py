"""PostgreSQL backend: a pool of connections, one transaction per unit of work, row locks.

Any number of `tally serve` processes may share one database. A member's row is locked
(`SELECT ... FOR UPDATE`) before its balance is read for a change; Idempotency-Keys are claimed
with a transaction-scoped advisory lock, so a concurrent duplicate is told it is in progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from tally.errors import Unavailable
from tally.ports import Tx
from tally.storage.migrate import apply_migrations
from tally.storage.sql import Connection, Dialect, SqlTx

T = TypeVar("T")

RETRIES = 5
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


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
    """`tally.ports.Store` on a PostgreSQL database."""

    def __init__(self, url: str, *, pool_size: int = 16) -> None:
        self.url = url
        self._pool: ConnectionPool[Any] | None = None
        self._pool_size = pool_size
        self._limiter = anyio.CapacityLimiter(pool_size)

    def migrate(self) -> list[str]:
        yoyo_url = "postgresql+psycopg://" + self.url.split("://", 1)[1]
        return apply_migrations(yoyo_url=yoyo_url, backend_name="postgres")

    def transact(self, work: Callable[[Tx], T]) -> T:
        return self._run(work, begin="BEGIN")

    async def write(self, work: Callable[[Tx], T]) -> T:
        return await anyio.to_thread.run_sync(self.transact, work, limiter=self._limiter)

    async def read(self, work: Callable[[Tx], T]) -> T:
        return await anyio.to_thread.run_sync(
            self._run,
            work,
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            limiter=self._limiter,
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _pool_(self) -> ConnectionPool[Any]:
        if self._pool is None:
            self._pool = ConnectionPool(
                self.url,
                min_size=1,
                max_size=self._pool_size,
                kwargs={"autocommit": True},
                timeout=10,
                open=True,
            )
        return self._pool

    def _run(self, work: Callable[[Tx], T], begin: str) -> T:
        for attempt in range(RETRIES):
            try:
                with self._pool_().connection() as conn:
                    try:
                        # Pipeline mode: statements whose results are not read (BEGIN, the
                        # writes, COMMIT) travel together; a read waits only for itself.
                        with conn.pipeline():
                            conn.execute(begin)
                            result = work(SqlTx(conn, DIALECT))
                            conn.execute("COMMIT")
                        return result
                    except BaseException:
                        if not conn.closed:
                            conn.execute("ROLLBACK")
                        raise
            except _RETRYABLE as error:
                if attempt == RETRIES - 1:
                    raise Unavailable(
                        "The database is busy; nothing was changed. Please retry."
                    ) from error
            except (psycopg.OperationalError, PoolTimeout) as error:
                raise Unavailable(
                    "The database is unreachable; nothing was changed. Please retry."
                ) from error
        raise AssertionError("unreachable")
