"""Database faults against a real `tally serve`: `503 unavailable` with `Retry-After`, a message
that says whether the write happened, recovery without restarting Tally, nothing lost or doubled.

PostgreSQL faults run on a private throwaway cluster (initdb into a temporary directory), which
the tests stop and start at will; the shared server is never touched.
"""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from tally.domain import Scope
from tally.maintenance import create_key
from tally.storage import open_store
from tally.storage.sqlite import path_from_url
from tests.support import (
    PrivatePostgres,
    postgres_bindir,
    private_postgres,
    start_server,
    verified,
    wait_until,
)
from tests.writes import (
    NOT_APPLIED,
    Load,
    Write,
    actual_ledger,
    assert_present,
    auth,
    check_resent,
    expected_ledger,
    fund,
    make_write,
    resend_all,
    send,
)

UNKNOWN = "may or may not have been applied"


def new_key(database_url: str) -> str:
    store = open_store(database_url)
    try:
        store.migrate()
        return create_key(store, program="faults", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    finally:
        store.close()


def unavailable(response: httpx.Response) -> str:
    """The message of a `503 unavailable` answer with `Retry-After` (fails on anything else)."""
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    return str(error["message"])


def record(write: Write, response: httpx.Response) -> None:
    write.status, write.reply, write.headers = (
        response.status_code,
        response.content,
        response.headers,
    )


# SQLite


def test_sqlite_locked_past_the_busy_timeout_answers_503_then_the_write_goes_through(
    tmp_path: object,
) -> None:
    url = f"sqlite:///{tmp_path}/locked.db"
    key = new_key(url)
    server = start_server(url, TALLY_SQLITE_BUSY_TIMEOUT_MS="300")
    write = make_write(0, run="locked")
    try:
        fund(server.url, key)
        with httpx.Client(base_url=server.url, headers=auth(key), timeout=30) as client:
            holder = sqlite3.connect(path_from_url(url), isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")  # another process's write, held
                began = time.monotonic()
                message = unavailable(send(client, write))
                waited = time.monotonic() - began
                assert "locked" in message and "nothing was changed" in message, message
                assert 0.3 <= waited < 10
                # Reads go on beside a writer (WAL).
                assert client.get("/v1/members/m1/balance").status_code == 200
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            again = send(client, write)
            assert again.status_code == 201, again.text
            assert "Idempotent-Replayed" not in again.headers  # the 503 had done nothing
            record(write, again)
        assert actual_ledger(server.url, key) == expected_ledger([write])
    finally:
        server.stop()
    verified(url)


def test_sqlite_out_of_space_answers_503_full_nothing_half_applied_and_recovers(
    tmp_path: object,
) -> None:
    url = f"sqlite:///{tmp_path}/full.db"
    path = path_from_url(url)
    key = new_key(url)
    server = start_server(url)
    try:
        fund(server.url, key)
    finally:
        server.stop()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # No file of the database may grow past this (the WAL starts empty): room for a few dozen
    # writes. Beyond it the kernel refuses to extend the file (EFBIG), as a full disk would.
    limit = path.stat().st_size + 160 * 1024

    def size_limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    server = start_server(url, preexec=size_limited)
    writes: list[Write] = []
    try:
        with httpx.Client(base_url=server.url, headers=auth(key), timeout=30) as client:
            # Until five writes were refused: a smaller write may still fit after a refusal.
            while sum(w.status == 503 for w in writes) < 5:
                assert len(writes) < 2000, "the size limit was never reached"
                write = make_write(len(writes), run="full")
                record(write, send(client, write))
                writes.append(write)
        refused = [w for w in writes if not w.acknowledged]
        assert {w.status for w in writes} == {201, 503}
        for write in refused:
            message = unavailable(httpx.Response(503, headers=write.headers, content=write.reply))
            assert "full" in message and "did not happen" in message, message
            assert "busy" not in message and "locked" not in message
        verified(url)  # as the refused writes left it, the server still running

        # Space is freed: the same server takes every refused write, for the first time.
        resource.prlimit(
            server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )
        assert_present(server.url, key, writes)
        assert check_resent(resend_all(server.url, key, writes)) == 0
        assert actual_ledger(server.url, key) == expected_ledger(writes)
    finally:
        server.stop()
    verified(url)
    print(
        f"database full (file size limit {limit} bytes): {len(writes)} writes, "
        f"{len(refused)} refused with 503, first after {writes.index(refused[0])}"
    )


# PostgreSQL, on a private cluster


@pytest.fixture
def cluster() -> Iterator[PrivatePostgres]:
    if postgres_bindir() is None:
        if os.environ.get("TALLY_TEST_POSTGRES_URL"):
            pytest.fail("PostgreSQL is asked for, but initdb and pg_ctl are not installed")
        pytest.skip("PostgreSQL's server programs are not installed")
    with private_postgres() as started:
        yield started


@pytest.mark.slow
def test_postgres_stopped_mid_load_answers_503_and_tally_recovers_when_it_returns(
    cluster: PrivatePostgres,
) -> None:
    url = cluster.url()
    key = new_key(url)
    server = start_server(url)
    try:
        fund(server.url, key)
        with Load(server.url, key, threads=8, run="outage", timeout=60) as load:
            load.wait_for(lambda: len(load.acknowledged()) >= 50, timeout=60, what="50 acks")
            cluster.stop("immediate")
            down = time.monotonic()

            def answered_after(moment: float, status: int, count: int) -> bool:
                return (
                    sum(w.started > moment and w.status == status for w in list(load.writes))
                    >= count
                )

            load.wait_for(lambda: answered_after(down, 503, 8), timeout=120, what="503s")
            cluster.start()
            up = time.monotonic()
            load.wait_for(lambda: answered_after(up, 201, 50), timeout=120, what="recovery")
        writes = load.writes
        assert all(w.error is None for w in writes), {w.error for w in writes}
        assert {w.status for w in writes} <= {201, 503}
        messages = [
            unavailable(httpx.Response(503, content=w.reply, headers=w.headers))
            for w in writes
            if w.status == 503
        ]
        assert all(any(m in text for m in (*NOT_APPLIED, UNKNOWN)) for text in messages)
        while_down = [w for w in writes if down < w.started and w.answered and w.answered < up]
        assert while_down and all(w.status == 503 for w in while_down)

        assert_present(server.url, key, writes)
        committed_unanswered = check_resent(resend_all(server.url, key, writes))
        assert actual_ledger(server.url, key) == expected_ledger(writes)
    finally:
        server.stop()
    verified(url)
    first_503 = min(w.answered or 1e18 for w in writes if w.started > down and w.status == 503)
    recovered = min(w.answered or 1e18 for w in writes if w.started > up and w.status == 201)
    slowest_503 = max((w.answered or 0) - w.started for w in writes if w.status == 503)
    print(
        f"first 503 {first_503 - down:.2f} s after the stop, slowest 503 {slowest_503:.1f} s, "
        f"first 201 {recovered - up:.2f} s after the start"
    )
    print(
        f"PostgreSQL down {up - down:.1f} s: {len(writes)} writes, "
        f"{sum(w.status == 503 for w in writes)} answered 503 ({len(while_down)} while down), "
        f"{committed_unanswered} of those had committed; recovered without a restart"
    )


@pytest.mark.slow
def test_postgres_connection_lost_during_commit_says_the_outcome_is_unknown(
    cluster: PrivatePostgres,
) -> None:
    """A COMMIT that waits (for a synchronous standby that never comes) is cut off by ending
    its backend: the transaction had committed locally, but Tally cannot know."""
    url = cluster.url()
    key = new_key(url)
    server = start_server(url)
    admin = psycopg.connect(url, autocommit=True)
    writes: list[Write] = []
    try:
        fund(server.url, key)
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        admin.execute("SELECT pg_reload_conf()")

        def waiting_commit() -> int | None:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            ).fetchone()
            return None if row is None else int(row[0])

        with (
            httpx.Client(base_url=server.url, headers=auth(key), timeout=60) as client,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            # Until the reload reaches the server, a write still commits at once.
            while True:
                write = make_write(len(writes), run="unknown")
                writes.append(write)
                pending = pool.submit(send, client, write)
                wait_until(
                    lambda sending=pending: sending.done() or waiting_commit() is not None,
                    timeout=30,
                    what="a COMMIT waiting for the standby",
                )
                if not pending.done():
                    break
                record(write, pending.result())
                assert write.status == 201 and len(writes) < 50
            backend = waiting_commit()
            admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            cut_off = pending.result(timeout=30)
            message = unavailable(cut_off)
            assert UNKNOWN in message and "Idempotency-Key" in message, message
            assert "nothing was changed" not in message

            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            admin.execute("SELECT pg_reload_conf()")
            # The retry settles it: the write had committed, its stored answer comes back.
            settled = send(client, write)
            assert settled.status_code == 201, settled.text
            assert settled.headers["Idempotent-Replayed"] == "true"
            record(write, settled)
        assert_present(server.url, key, writes)
        assert actual_ledger(server.url, key) == expected_ledger(writes)
    finally:
        admin.close()
        server.stop()
    verified(url)
