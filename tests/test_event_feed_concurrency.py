"""The feed under concurrent writers: a consumer polling with `after` never misses an event and
never sees one twice (api.md, section 8).

On PostgreSQL an event's `seq` is drawn when it is inserted, before its transaction commits, so
a later `seq` can commit first. The first test builds that overtaking on purpose, and is the one
that fails if the feed stops holding back what could still be overtaken (checked by removing the
hold-back: it fails). The second runs real writers against a real server while a consumer polls,
an end-to-end check of the whole path; its race windows are too short to catch that alone.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from tally.domain import Event
from tally.maintenance import run_async
from tally.ports import Store, Tx
from tally.service import Ledger
from tests.conftest import POSTGRES_URL
from tests.support import Api, serving, verified

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def appended(program_id: int, name: str) -> Event:
    return Event(name, program_id, "member.created", NOW, "{}")


def feed_ids(store: Store, program_id: int, after: str | None) -> list[str]:
    def read(tx: Tx) -> list[str]:
        position = None if after is None else tx.events.position(program_id, after)
        return [event.id for _, event in tx.events.after(program_id, position, limit=1000)]

    return store.transact(read)


def test_an_event_that_commits_after_a_later_one_is_still_listed_after_what_was_seen(
    store: Store, database_url: str
) -> None:
    """T1 writes E1 and stays open; T2 writes E2 and commits; a consumer polls; T1 commits.

    Listing E2 at once and then paging after it would skip E1 for good: the feed must hold E2
    back until T1 has ended, then list E1 before it."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: T2 cannot commit while T1 is open")
    program_id = store.transact(lambda tx: tx.programs.ensure("acme", now=NOW)).id
    written, release = threading.Event(), threading.Event()

    def slow(tx: Tx) -> None:
        tx.events.append([appended(program_id, "evt_1_slow")])
        tx.events.head(program_id)  # a read: the INSERT has reached the server
        written.set()
        assert release.wait(timeout=30)

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(store.transact, slow)
        assert written.wait(timeout=30)
        store.transact(lambda tx: tx.events.append([appended(program_id, "evt_2_fast")]))
        seen = feed_ids(store, program_id, None)
        assert seen == []  # E2 is held back while T1, older, may still commit
        release.set()
        first.result(timeout=30)
    seen += feed_ids(store, program_id, seen[-1] if seen else None)
    assert seen == ["evt_1_slow", "evt_2_fast"]


def test_a_transaction_left_open_in_another_database_does_not_hold_the_feed_back(
    store: Store, database_url: str
) -> None:
    """Only transactions that could write this database's events hold the feed back."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no other databases")
    program_id = store.transact(lambda tx: tx.programs.ensure("acme", now=NOW)).id
    assert POSTGRES_URL is not None
    with psycopg.connect(POSTGRES_URL) as elsewhere:  # the server's `test` database
        elsewhere.execute("SELECT pg_current_xact_id()")  # holds a transaction id, stays open
        store.transact(lambda tx: tx.events.append([appended(program_id, "evt_after")]))
        assert feed_ids(store, program_id, None) == ["evt_after"]
        # A transaction of this database, left open the same way, does hold it back.
        with psycopg.connect(database_url) as here:
            here.execute("SELECT pg_current_xact_id()")
            store.transact(lambda tx: tx.events.append([appended(program_id, "evt_held")]))
            assert feed_ids(store, program_id, "evt_after") == []
        assert feed_ids(store, program_id, "evt_after") == ["evt_held"]


@contextlib.contextmanager
def busy_elsewhere(url: str, *, clients: int) -> Iterator[None]:
    """`clients` connections to another database of the server, each running one short
    transaction with an id after another (as other test runs and other applications do)."""
    stop = threading.Event()

    def churn() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_current_xact_id(), pg_sleep(%s)", (random.random() / 50,)
                    )

    with ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(churn) for _ in range(clients)]
        try:
            yield
        finally:
            stop.set()
            for future in running:
                future.result(timeout=30)


def test_a_write_is_in_the_next_feed_page_and_fan_out_while_other_databases_are_busy(
    api: Api, database_url: str
) -> None:
    """Transactions that other databases run must not hold the feed back, even those that end
    while the feed is being read: once a write has answered, its events are in the next page of
    the feed and in the next fan-out. (Before the horizon looked at other databases ahead of
    its snapshot, most reads of the feed after a position left out what had just committed.)"""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no other databases")
    assert POSTGRES_URL is not None
    api.member("alice")
    endpoint = api.post("/v1/webhook_endpoints", {"url": "https://8.8.8.8/hook"})
    assert endpoint.status_code == 201, endpoint.text
    after = api.get("/v1/events", limit=100).json()["meta"]["next_after"]
    fan_out = Ledger(api.store).webhooks.fan_out
    late: dict[str, list[int]] = {"feed": [], "fan-out": []}  # the rounds that missed
    with busy_elsewhere(POSTGRES_URL, clients=6):
        for round_ in range(60):
            transaction_id = api.award("alice", 1)["transaction_id"]
            page = api.get("/v1/events", after=after).json()
            listed = [event["data"].get("transaction_id") for event in page["data"]]
            if listed != [transaction_id]:
                late["feed"].append(round_)
            after = page["meta"]["next_after"]
            if run_async(api.store, fan_out) != 1:
                late["fan-out"].append(round_)
    assert late == {"feed": [], "fan-out": []}
    deliveries = api.get(
        f"/v1/webhook_endpoints/{endpoint.json()['data']['endpoint_id']}/deliveries", per_page=100
    )
    assert deliveries.json()["meta"]["total"] == 60


def test_a_consumer_polling_during_concurrent_writes_sees_every_event_exactly_once(
    database_url: str,
) -> None:
    writers, awards_each = 4, 40
    with serving(database_url) as live:
        api = live.api
        members = [f"m{i}" for i in range(writers)]
        for member in members:
            api.member(member)
        done = threading.Event()
        polled: list[str] = []

        def consume() -> None:
            after = None
            while True:
                finished = done.is_set()  # read before the poll: a last pass after the writers
                params: dict[str, Any] = {"limit": 7, **({"after": after} if after else {})}
                page = api.get("/v1/events", **params).json()
                polled.extend(event["event_id"] for event in page["data"])
                after = page["meta"]["next_after"]
                if finished and not page["meta"]["has_more"]:
                    return

        def write(member: str) -> list[str]:
            return [api.award(member, 1)["transaction_id"] for _ in range(awards_each)]

        with ThreadPoolExecutor(writers + 1) as pool:
            consumer = pool.submit(consume)
            made = [t for ids in pool.map(write, members) for t in ids]
            done.set()
            consumer.result(timeout=120)

        everything = api.get("/v1/events", limit=1000).json()["data"]
        assert len(polled) == len(set(polled)), "an event was listed twice"
        assert polled == [event["event_id"] for event in everything]
        transactions = [e["data"]["transaction_id"] for e in everything[writers:]]
        assert sorted(transactions) == sorted(made)
        assert len(everything) == writers + writers * awards_each
    verified(database_url)
