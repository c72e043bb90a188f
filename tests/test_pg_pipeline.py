"""The server's statements on libpq's pipeline (`tally.storage.pipeline`), on a real PostgreSQL.

`Pipe` is the `Connection` that `tally.storage.sql.Session` runs statements on: it queues them
and waits on the socket only when a result is read. These tests hold it to what psycopg's own
cursors promised: results in order however many statements are queued, a failed statement
raising psycopg's exception for its SQLSTATE, statements prepared only where allowed and
still correct after a failure; and, through the API, a refused request handing its connection
back to the pool instead of costing one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
import uvloop
from psycopg import errors as pg_errors

from tally.storage.bridge import run_in_greenlet
from tally.storage.pipeline import PREPARE_AFTER, Pipe, Prepared
from tests.support import POOLER, Api

T = TypeVar("T")

on_postgres = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


def in_pipe(url: str, work: Callable[[Pipe], T], *, prepare: bool = True) -> T:
    """`work(pipe)` on a new connection in pipeline mode, as `PostgresStore` runs a unit of
    work; the pipe is synced and closed after it."""

    async def run() -> T:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            pipe = Pipe(conn, Prepared(prepare))
            pipe.open()
            result = await run_in_greenlet(work, pipe)
            await pipe.sync()
            pipe.close()
            return result
        finally:
            await conn.close()

    return uvloop.run(run())


@pytest.fixture
def table(database_url: str) -> Iterator[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE pipe_t (id bigint PRIMARY KEY, body text NOT NULL)")
    yield database_url
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE pipe_t")


@on_postgres
def test_thousands_of_queued_statements_come_back_whole_and_in_order(table: str) -> None:
    """Far more than a socket buffer holds in both directions: the pipe must read answers
    while it sends, or the server (blocked on its answers) and the client wait for each other."""
    body = "x" * 2000

    def work(pipe: Pipe) -> list[Any]:
        results = [
            pipe.execute("INSERT INTO pipe_t VALUES (%s, %s) RETURNING id, length(body)", (n, body))
            for n in range(3000)
        ]
        pipe.executemany(
            "INSERT INTO pipe_t VALUES (%s, %s)", [(n, body) for n in range(3000, 6000)]
        )
        total = pipe.execute(
            "SELECT count(*), sum(length(body)) FROM pipe_t WHERE body = %s", (body,)
        )
        return [r.fetchone() for r in results] + [total.fetchone()]

    rows = in_pipe(table, work)
    assert rows[:3000] == [(n, 2000) for n in range(3000)]
    assert rows[3000] == (6000, 6000 * 2000)


@on_postgres
def test_a_failed_statement_raises_its_own_error_and_nothing_after_it_applies(table: str) -> None:
    def work(pipe: Pipe) -> None:
        pipe.execute("BEGIN")
        pipe.execute("INSERT INTO pipe_t VALUES (%s, %s)", (1, "a"))
        pipe.execute("INSERT INTO pipe_t VALUES (%s, %s)", (1, "again"))  # the same key
        pipe.execute("INSERT INTO pipe_t VALUES (%s, %s)", (2, "b"))
        pipe.execute("SELECT 1").fetchone()  # the round trip where the failure shows

    with pytest.raises(pg_errors.UniqueViolation):
        in_pipe(table, work)
    with psycopg.connect(table) as conn:
        assert conn.execute("SELECT count(*) FROM pipe_t").fetchone() == (0,)


@on_postgres
def test_a_query_is_prepared_after_a_few_uses_and_stays_correct_after_a_failure(
    table: str,
) -> None:
    """The query's preparation travels in the same round trip as a failing statement before it
    (so the server skips it): the pipe must forget the name, prepare it again later, and never
    ask the server to run a statement it does not have."""
    query = "SELECT id FROM pipe_t WHERE id = %s"

    def work(pipe: Pipe) -> list[Any]:
        pipe.execute("INSERT INTO pipe_t VALUES (%s, %s) ON CONFLICT DO NOTHING", (7, "seven"))
        for _ in range(PREPARE_AFTER - 1):
            assert pipe.execute(query, (7,)).fetchone() == (7,)
        pipe.execute("SELECT 1/0")  # fails; the preparation queued next is skipped
        pipe.execute(query, (7,))
        with pytest.raises(pg_errors.DivisionByZero):
            pipe.execute("SELECT 1").fetchone()
        found = [pipe.execute(query, (7,)).fetchone() for _ in range(PREPARE_AFTER + 2)]
        names = pipe.execute("SELECT name FROM pg_prepared_statements").fetchall()
        return [found, names]

    found, names = in_pipe(table, work)
    assert found == [(7,)] * (PREPARE_AFTER + 2)
    assert names == [("tally_0",)]
    _, unprepared = in_pipe(table, work, prepare=False)
    assert unprepared == []


@on_postgres
def test_refused_requests_hand_their_connection_back_rather_than_cost_one(
    api: Api, database_url: str
) -> None:
    """A write the rules refuse after reading (an overdraw, an unknown member's award) rolls
    back and reuses its connection: the server's sessions for this database are the same ones
    before and after."""
    if POOLER.port is not None:
        pytest.skip("behind PgBouncer the server sessions are the pooler's")
    api.member("rich")
    api.award("rich", 100)
    before = _sessions(database_url)
    for _ in range(10):
        assert api.deduct("rich", 1_000).status_code == 422
        unknown = api.post("/v1/points/award", {"member_id": "nobody", "points": 5, "reason": "x"})
        assert unknown.status_code == 404
    assert api.balance("rich")["balance"] == 100
    assert _sessions(database_url) == before


def _sessions(url: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return {pid for (pid,) in rows}


@on_postgres
def test_a_cancelled_request_stops_its_statement_on_the_server(database_url: str) -> None:
    """A unit of work cancelled while its statement runs (a client gone, a timeout) must not
    leave the statement running on a connection nobody reads any more."""
    from tally.storage.postgres import PostgresStore

    store = PostgresStore(database_url)

    def sleep(tx: Any) -> Any:
        # No role runs a statement for seconds: this one goes through the session they share.
        return tx.members._s.one("SELECT pg_sleep(5)")

    async def run() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.read(sleep), 0.5)
        await store.aclose()

    uvloop.run(run())
    store.close()
    with psycopg.connect(database_url, autocommit=True) as admin:
        running = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' "
            "AND state = 'active'"
        ).fetchone()
    assert running == (0,)
