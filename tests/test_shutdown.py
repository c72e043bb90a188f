"""SIGTERM: `tally serve` stops accepting connections, finishes the writes in flight, commits
them, answers them and exits 0 within the grace period.

In the first test the writes are held in flight on purpose: the test itself holds the
database's write lock (SQLite: the group commit is pending, waiting for it) or every member's row
lock (PostgreSQL: each write waits inside its transaction). It checks each write is inside the
server (a second sending with the same key is told it is in progress), sends SIGTERM, waits
until the server refuses new connections, and only then lets the writes through. The second
sends SIGTERM in the middle of a load, as a deployment would (more points under `make soak`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest

from tally.domain import Scope
from tally.maintenance import create_key
from tally.storage import open_store
from tally.storage.sqlite import path_from_url
from tests.support import start_server, verified, wait_until
from tests.writes import (
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
)

GRACE_SECONDS = 30
SOAK = os.environ.get("TALLY_SOAK") == "1"
# How many acknowledgements to wait for before SIGTERM, under load.
SIGTERM_POINTS = [1, 30, 100, 300, 700] if SOAK else [100]


def new_key(database_url: str) -> str:
    store = open_store(database_url)
    try:
        store.migrate()
        return create_key(store, program="term", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    finally:
        store.close()


@contextlib.contextmanager
def writes_held(database_url: str) -> Iterator[Callable[[], None]]:
    """Hold what every award and deduct needs (yields the function that lets go)."""
    if database_url.startswith("sqlite"):
        lite = sqlite3.connect(path_from_url(database_url), isolation_level=None)
        lite.execute("BEGIN IMMEDIATE")  # the write lock; readers go on (WAL)
        try:
            yield lambda: lite.execute("ROLLBACK")
        finally:
            lite.close()
        return
    with psycopg.connect(database_url) as pg:
        pg.execute("SELECT 1 FROM members FOR UPDATE")  # every member's row lock
        try:
            yield pg.rollback
        finally:
            pg.rollback()


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def in_progress(client: httpx.Client, write: Write) -> bool:
    """Whether the server is running `write` now: the same request again is told so."""
    headers = {"Idempotency-Key": write.key, "Content-Type": "application/json"}
    response = client.post(write.path, content=write.body, headers=headers, timeout=5)
    assert response.status_code == 409, (write.key, response.status_code, response.text)
    return bool(response.json()["error"]["code"] == "idempotency_in_progress")


@pytest.mark.slow
def test_sigterm_finishes_the_writes_in_flight_commits_them_and_exits_0(
    database_url: str,
) -> None:
    key = new_key(database_url)
    server = start_server(
        database_url,
        TALLY_SQLITE_BUSY_TIMEOUT_MS="60000",  # the pending batch waits for the lock, not fails
        TALLY_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
    )
    writes = [make_write(index, run="term") for index in range(6)]
    sent = [threading.Event() for _ in writes]
    try:
        fund(server.url, key)
        with (
            httpx.Client(base_url=server.url, headers=auth(key), timeout=60) as client,
            ThreadPoolExecutor(max_workers=len(writes)) as pool,
            writes_held(database_url) as let_go,
        ):

            def first_sending(index: int) -> httpx.Response:
                def trace(event: str, info: dict[str, Any]) -> None:
                    if event == "http11.send_request_body.complete":
                        sent[index].set()

                write = writes[index]
                headers = {"Idempotency-Key": write.key, "Content-Type": "application/json"}
                return client.post(
                    write.path, content=write.body, headers=headers, extensions={"trace": trace}
                )

            answers = [pool.submit(first_sending, index) for index in range(len(writes))]
            wait_until(lambda: all(e.is_set() for e in sent), timeout=30, what="all writes sent")
            wait_until(
                lambda: all(in_progress(client, w) for w in writes),
                timeout=30,
                what="every write inside the server",
            )
            terminated = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            wait_until(
                lambda: refuses_connections(server.url),
                timeout=10,
                what="the server to stop accepting connections",
            )
            assert not any(answer.done() for answer in answers), "a write finished while held"
            let_go()
            released = time.monotonic()
            responses = [answer.result(timeout=GRACE_SECONDS) for answer in answers]
        code = server.process.wait(timeout=GRACE_SECONDS + 10)
        exited = time.monotonic()
    finally:
        server.stop(signal.SIGKILL)

    assert code == 0, server.errors()
    assert exited - terminated < GRACE_SECONDS
    assert [r.status_code for r in responses] == [201] * len(writes), [r.text for r in responses]
    for write, response in zip(writes, responses, strict=True):
        write.status, write.reply = response.status_code, response.content

    restarted = start_server(database_url)
    try:
        assert_present(restarted.url, key, writes)
        assert actual_ledger(restarted.url, key) == expected_ledger(writes)
        assert check_resent(resend_all(restarted.url, key, writes)) == 0
        assert actual_ledger(restarted.url, key) == expected_ledger(writes)
    finally:
        restarted.stop()
    verified(database_url)
    print(
        f"SIGTERM with {len(writes)} writes held in flight: all answered 201 and exit 0 "
        f"{exited - released:.2f} s after they were let go"
    )


@pytest.mark.slow
@pytest.mark.parametrize("acks_before_sigterm", SIGTERM_POINTS)
def test_sigterm_under_load_answers_every_write_it_applied_and_exits_0(
    database_url: str, acks_before_sigterm: int
) -> None:
    key = new_key(database_url)
    server = start_server(database_url, TALLY_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS))
    try:
        fund(server.url, key)
        with Load(server.url, key, threads=16, run="term-load") as load:
            load.wait_for_acks(acks_before_sigterm)
            terminated = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            code = server.process.wait(timeout=GRACE_SECONDS + 10)
            exited = time.monotonic()
    finally:
        server.stop(signal.SIGKILL)
    assert code == 0, server.errors()
    assert exited - terminated < GRACE_SECONDS
    writes = load.writes
    assert {w.status for w in writes} <= {201, None}, {w.status for w in writes}
    in_flight = [w for w in writes if w.started < terminated and (w.answered or 1e18) > terminated]
    finished = [w for w in in_flight if w.acknowledged]
    assert finished, "no write in flight at SIGTERM was finished"

    restarted = start_server(database_url)
    try:
        assert_present(restarted.url, key, writes)
        # A write the server applied was answered: none turns out committed but unanswered.
        assert check_resent(resend_all(restarted.url, key, writes)) == 0
        assert actual_ledger(restarted.url, key) == expected_ledger(writes)
    finally:
        restarted.stop()
    verified(database_url)
    print(
        f"SIGTERM after {acks_before_sigterm} acks: {len(in_flight)} writes in flight, "
        f"{len(finished)} of them finished and answered 201, exit 0 after "
        f"{exited - terminated:.2f} s"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_on_an_idle_server_exits_0(tmp_path: object, workers: int) -> None:
    server = start_server(f"sqlite:///{tmp_path}/idle.db", workers=workers)
    try:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0, server.errors()
    finally:
        server.stop(signal.SIGKILL)
