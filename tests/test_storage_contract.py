"""The storage contract (`tally.ports.Tx` and `Store`), run against every backend."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tally.commands import AwardCommand, BulkCommand, DeductCommand, Idempotency, Posting
from tally.domain import (
    Account,
    Debt,
    Draw,
    Entry,
    EntryStatus,
    EntryType,
    HistoryQuery,
    Lot,
    Profile,
    Scope,
)
from tally.errors import InsufficientPoints, MemberNotFound
from tally.maintenance import run_async, verify
from tally.ports import Store, StoredReply, Tx
from tally.rules import points as point_rules
from tally.service import Ledger, accounts
from tally.storage.bridge import wait_for
from tally.storage.postgres import PostgresStore, prepare_if_own_session
from tally.storage.sqlite import SqliteStore
from tests.support import POOLER

NOW = datetime(2026, 3, 1, tzinfo=UTC)
_INTEGRITY = (sqlite3.IntegrityError, psycopg.IntegrityError)


def _program(store: Store, name: str = "p") -> int:
    return store.transact(lambda tx: tx.programs.ensure(name, now=NOW)).id


def _member(store: Store, program_id: int, member_id: str = "m") -> int:
    def work(tx: Tx) -> int:
        tx.members.insert(program_id, Profile(member_id), now=NOW)
        found = tx.members.get(program_id, member_id)
        assert found is not None
        return found.pk

    return store.transact(work)


def test_a_member_id_is_unique_within_a_program_only(store: Store) -> None:
    first, second = _program(store, "a"), _program(store, "b")
    assert store.transact(lambda tx: tx.members.insert(first, Profile("m"), now=NOW))
    assert not store.transact(lambda tx: tx.members.insert(first, Profile("m"), now=NOW))
    assert store.transact(lambda tx: tx.members.insert(second, Profile("m"), now=NOW))
    assert store.transact(lambda tx: tx.members.get(second, "zz")) is None


def test_ensure_program_returns_the_same_program_twice(store: Store) -> None:
    assert _program(store, "x") == _program(store, "x")


def test_work_that_raises_leaves_nothing_behind(store: Store) -> None:
    program_id = _program(store)

    def work(tx: Tx) -> None:
        tx.members.insert(program_id, Profile("ghost"), now=NOW)
        raise MemberNotFound("changed my mind")

    with pytest.raises(MemberNotFound):
        store.transact(work)
    assert store.transact(lambda tx: tx.members.get(program_id, "ghost")) is None


def test_a_negative_balance_is_kept_as_a_debt_and_read_back_as_it_was(store: Store) -> None:
    program_id = _program(store)
    pk = _member(store, program_id)
    owing = Account(balance=-7, lifetime_earned=3, lifetime_deducted=10, last_seq=2)
    store.transact(lambda tx: tx.members.save_account(pk, owing))
    found = store.transact(lambda tx: tx.members.get(program_id, "m"))
    assert found is not None and found.account == owing
    store.transact(lambda tx: tx.members.save_account(pk, Account(balance=4)))
    found = store.transact(lambda tx: tx.members.get(program_id, "m"))
    assert found is not None and found.account == Account(balance=4)


def test_a_reversal_row_names_what_it_reverses_and_is_owed_what_no_draw_covers(
    store: Store,
) -> None:
    program_id = _program(store)
    pk = _member(store, program_id)
    award, later = Lot("award", 50, None, 1), Lot("later", 30, None, 3)

    Found = tuple[list[Debt], list[Debt], Lot | None, Lot | None, Entry | None, Entry | None]

    def work(tx: Tx) -> Found:
        _entry_for_lot(tx, program_id, pk, award)
        tx.lots.insert(award, member_pk=pk)
        reversal = replace(
            _entry(program_id, pk, "rev", seq=2, points=-80),
            type=EntryType.REVERSAL,
            reverses="award",
        )
        tx.entries.insert(reversal)
        tx.lots.insert_draws("rev", [Draw("award", 50)])
        tx.lots.set_remaining("award", 0)
        tx.entries.set_points_reversed("award", 80)
        owed_before = tx.lots.debts(pk)
        _entry_for_lot(tx, program_id, pk, later)
        tx.lots.insert(later, member_pk=pk)
        tx.lots.insert_draws("rev", [Draw("later", 10)])
        return (
            owed_before,
            tx.lots.debts(pk),
            tx.lots.get("award"),
            tx.lots.get("nothing"),
            tx.entries.get(program_id, "rev"),
            tx.entries.get(program_id, "award"),
        )

    owed_before, owed_after, lot, nothing, row, original = store.transact(work)
    assert owed_before == [Debt("rev", 30)] and owed_after == [Debt("rev", 20)]
    assert lot == replace(award, remaining=0) and nothing is None
    assert row is not None and (row.reverses, row.points_reversed) == ("award", 0)
    assert original is not None and original.points_reversed == 80


def test_an_entry_keeps_who_made_it_in_every_read(store: Store) -> None:
    program_id = _program(store)
    _member(store, program_id)

    def work(tx: Tx) -> list[str]:
        member = accounts.locked_member(tx, program_id, "m", NOW).member
        later = AwardCommand("m", 5, "later", available_at=NOW + timedelta(days=1))
        posted = point_rules.plan_award(
            member, AwardCommand("m", 5, "now"), expire_after_days=None, now=NOW, created_by="key_a"
        )
        pending = point_rules.plan_award(
            replace(member, account=posted.account),
            later,
            expire_after_days=None,
            now=NOW,
            created_by="key_b",
        )
        accounts.write_awards(tx, [posted, pending], NOW)
        member = accounts.locked_member(tx, program_id, "m", NOW).member
        one = tx.entries.get(program_id, posted.entry.id)
        listed = tx.entries.page(member, HistoryQuery(), offset=0, limit=10, newest_first=True)
        due = tx.entries.pending_awards(member.pk, due_by=NOW + timedelta(days=1))
        assert one is not None
        return [one.created_by, *(e.created_by for e in listed), *(e.created_by for e in due)]

    assert store.transact(work) == ["key_a", "key_b", "key_a", "key_b"]


def test_open_lots_come_in_spend_order(store: Store) -> None:
    program_id = _program(store)
    pk = _member(store, program_id)
    lots = [
        Lot("never-old", 5, None, 1),
        Lot("late", 5, NOW + timedelta(days=30), 2),
        Lot("soon", 5, NOW + timedelta(days=1), 3),
        Lot("never-new", 5, None, 4),
        Lot("soon-too", 5, NOW + timedelta(days=1), 5),
    ]

    def work(tx: Tx) -> list[str]:
        for lot in lots:
            _entry_for_lot(tx, program_id, pk, lot)
            tx.lots.insert(lot, member_pk=pk)
        tx.lots.set_remaining("late", 0)
        return [lot.entry_id for lot in tx.lots.open(pk)]

    assert store.transact(work) == ["soon", "soon-too", "never-old", "never-new"]
    due = store.transact(lambda tx: tx.lots.due(pk, by=NOW + timedelta(days=1)))
    assert [lot.entry_id for lot in due] == ["soon", "soon-too"]

    def next_expiration(tx: Tx) -> object:
        state = tx.members.state_with_expiration(program_id, "m", now=NOW)
        assert state is not None
        return state.next_expiration

    # The lots expiring soonest, added up when they expire at the same instant.
    assert store.transact(next_expiration) == (10, NOW + timedelta(days=1))
    store.transact(lambda tx: [tx.lots.set_remaining(lot, 0) for lot in ("soon", "soon-too")])
    assert store.transact(next_expiration) is None  # never-expiring lots only


def test_a_member_read_for_a_spend_brings_the_lots_that_spend_draws_on(store: Store) -> None:
    program_id = _program(store)
    pk = _member(store, program_id)
    # 70 one-point lots, the last inserted expiring first: more than two reads' worth.
    lots = [Lot(f"lot{i:02}", 1, NOW + timedelta(days=80 - i), i + 1) for i in range(70)]

    def fill(tx: Tx) -> None:
        for lot in lots:
            _entry_for_lot(tx, program_id, pk, lot)
            tx.lots.insert(lot, member_pk=pk)

    store.transact(fill)
    for spending in (0, 1, 32, 33, 64, 65, 70, 500):

        def work(tx: Tx, spending: int = spending) -> tuple[object, list[Lot]]:
            state = tx.members.state_for_spend(program_id, "m", now=NOW, points=spending)
            assert state is not None and state.member.pk == pk
            return state.spend_lots, tx.lots.covering(pk, spending)

        brought, read = store.transact(work)
        assert brought == read, spending
        assert sum(lot.remaining for lot in read) >= min(spending, 70)
        assert [lot.entry_id for lot in read[:2]] == (["lot69", "lot68"] if spending else [])
    plain = store.transact(lambda tx: tx.members.state(program_id, "m", now=NOW, lock=True))
    assert plain is not None and plain.spend_lots is None
    missing = store.transact(
        lambda tx: tx.members.state_for_spend(program_id, "nobody", now=NOW, points=5)
    )
    assert missing is None


def test_one_statement_reads_answer_refuse_a_second_statement_and_leave_the_store_usable(
    store: Store,
) -> None:
    program_id = _program(store)
    _member(store, program_id)

    def member_count(tx: Tx) -> int:
        return tx.members.count(program_id)

    def two_statements(tx: Tx) -> None:
        tx.members.get(program_id, "m")
        tx.members.count(program_id)

    def fails_after_its_statement(tx: Tx) -> None:
        tx.members.get(program_id, "m")
        raise MemberNotFound("the work failed after its statement")

    async def reads() -> list[object]:
        seen: list[object] = [await store.lookup(member_count)]
        with pytest.raises(AssertionError, match="second statement"):
            await store.lookup(two_statements)
        for _ in range(20):  # more times than the pool has connections
            with pytest.raises(MemberNotFound):
                await store.lookup(fails_after_its_statement)
        # The same loop's connections still serve every kind of work afterwards.
        seen.append(await store.lookup(member_count))
        seen.append(await store.read(two_statements))
        added = await store.write(lambda tx: tx.members.insert(program_id, Profile("n"), now=NOW))
        seen.append(added)
        seen.append(await store.lookup(member_count))
        return seen

    assert run_async(store, reads) == [1, 1, None, True, 2]


def test_writes_that_refuse_after_writing_leave_nothing_and_the_store_usable(
    store: Store,
) -> None:
    program_id = _program(store)

    def refuses_after_writing(name: str) -> Callable[[Tx], None]:
        def work(tx: Tx) -> None:
            tx.members.insert(program_id, Profile(name), now=NOW)
            raise MemberNotFound("the work refused after writing")

        return work

    def fails_in_the_database(tx: Tx) -> None:
        tx.members.insert(program_id, Profile("bad"), now=NOW)
        member = tx.members.get(program_id, "bad")
        assert member is not None
        tx.members.save_account(member.pk, Account(pending=-1))  # breaks a CHECK constraint

    async def writes() -> list[object]:
        for n in range(20):  # more times than the pool has connections
            with pytest.raises(MemberNotFound):
                await store.write(refuses_after_writing(f"ghost{n}"))
        with pytest.raises(_INTEGRITY):
            await store.write(fails_in_the_database)
        # Every connection of the loop commits the next write on its own, and only it.
        added = await asyncio.gather(
            *(
                store.write(
                    lambda tx, n=n: tx.members.insert(program_id, Profile(f"m{n}"), now=NOW)
                )
                for n in range(10)
            )
        )
        count = await store.lookup(lambda tx: tx.members.count(program_id))
        return [*added, count]

    assert run_async(store, writes) == [True] * 10 + [10]
    assert store.transact(lambda tx: tx.members.count(program_id)) == 10


class Interrupted(BaseException):
    """Not an `Exception`: like `KeyboardInterrupt`, it gets past `except Exception`."""


def test_work_that_raises_a_base_exception_fails_alone_and_every_write_still_answers(
    store: Store,
) -> None:
    program_id = _program(store)

    def interrupted(tx: Tx) -> None:
        tx.members.insert(program_id, Profile("ghost"), now=NOW)
        raise Interrupted()

    def enrol(name: str) -> Callable[[Tx], bool]:
        return lambda tx: tx.members.insert(program_id, Profile(name), now=NOW)

    async def bounded(write: Awaitable[object]) -> object:
        try:
            return await asyncio.wait_for(write, timeout=10)
        except Interrupted as error:
            return error

    async def writes() -> list[object]:
        # Together (one group commit on SQLite), then alone, then the next write.
        together = [store.write(enrol("a")), store.write(interrupted), store.write(enrol("b"))]
        seen = list(await asyncio.gather(*(bounded(write) for write in together)))
        seen.append(await bounded(store.write(interrupted)))
        seen.append(await bounded(store.write(enrol("c"))))
        return seen

    outcomes = run_async(store, writes)
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "bool",
        "Interrupted",
        "bool",
        "Interrupted",
        "bool",
    ]
    everyone = store.transact(lambda tx: tx.members.page(program_id, offset=0, limit=10))
    assert sorted(member.member_id for member in everyone) == ["a", "b", "c"]


def test_writes_in_one_lane_commit_together_and_each_fails_alone(store: Store) -> None:
    """Writes to one lane that arrive together go in one transaction on PostgreSQL (SQLite's
    group commit takes every write): one the work refuses is undone alone; one the database
    refuses undoes nothing of the others, which commit all the same."""
    program_id = _program(store)

    def enrol(name: str) -> Callable[[Tx], bool]:
        return lambda tx: tx.members.insert(program_id, Profile(name), now=NOW)

    def refuses(tx: Tx) -> None:
        tx.members.insert(program_id, Profile("ghost"), now=NOW)
        raise MemberNotFound("the work refused after writing")

    def breaks_a_check(tx: Tx) -> None:
        tx.members.insert(program_id, Profile("bad"), now=NOW)
        member = tx.members.get(program_id, "bad")
        assert member is not None
        tx.members.save_account(member.pk, Account(pending=-1))

    def interrupted(tx: Tx) -> None:
        tx.members.insert(program_id, Profile("gone"), now=NOW)
        raise Interrupted()

    async def together(works: list[Callable[[Tx], object]]) -> list[str]:
        writes = [store.write(work, lane=(program_id, "m")) for work in works]
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        return [
            "IntegrityError" if isinstance(outcome, _INTEGRITY) else type(outcome).__name__
            for outcome in outcomes
        ]

    async def writes() -> list[list[str]]:
        first = [enrol(f"a{n}") for n in range(6)] + [refuses, interrupted, enrol("a6")]
        second = [enrol("b0"), breaks_a_check, enrol("b1"), refuses, enrol("b2")]
        return [await together(first), await together(second)]

    first, second = run_async(store, writes)
    assert first == ["bool"] * 6 + ["MemberNotFound", "Interrupted", "bool"]
    assert second == ["bool", "IntegrityError", "bool", "MemberNotFound", "bool"]
    everyone = store.transact(lambda tx: tx.members.page(program_id, offset=0, limit=20))
    names = [f"a{n}" for n in range(7)] + ["b0", "b1", "b2"]
    assert sorted(member.member_id for member in everyone) == names
    if not isinstance(store, SqliteStore):
        # The first nine in one transaction; the second batch ran again one by one.
        assert (store.batches, store.batched_writes) == (1, 9)  # type: ignore[attr-defined]


def test_writes_to_different_members_of_one_lane_share_their_round_trips(store: Store) -> None:
    """Writes of different members that meet in one lane's transaction run side by side, one
    round trip answering all their reads; a member's own writes still run one after the other,
    each seeing the one before (no count is lost). A write refused before it wrote anything
    leaves the others' to commit with it; one refused after writing is undone, and the others
    of its wave run again by themselves."""
    program_id = _program(store)
    names = [f"m{n}" for n in range(5)]
    for name in names:
        _member(store, program_id, name)
    # PostgreSQL: one lane (one connection), so that every write below meets in it.
    lanes = store if isinstance(store, SqliteStore) else PostgresStore(store.url, pool_size=1)  # type: ignore[attr-defined]

    def refuses_after_reading(tx: Tx) -> None:
        if tx.members.state(program_id, "ghost", now=NOW, lock=True) is None:
            raise MemberNotFound("no ghost")

    def refuses_after_writing(tx: Tx) -> None:
        state = tx.members.state(program_id, "m4", now=NOW, lock=True)
        assert state is not None
        tx.members.save_account(state.member.pk, Account(pending=100))
        raise MemberNotFound("refused after writing")

    async def together(works: list[tuple[str, Callable[[Tx], object]]]) -> list[object]:
        writes = [lanes.write(work, lane=(program_id, name)) for name, work in works]
        return _named(await asyncio.gather(*writes, return_exceptions=True))

    def bumps(*names: str) -> list[tuple[str, Callable[[Tx], object]]]:
        return [(name, _bump(program_id, name)) for name in names]

    async def writes() -> tuple[list[object], list[object], int]:
        first = [*bumps("m0", "m1", "m0", "m2"), ("ghost", refuses_after_reading)]
        first += bumps("m0", "m3")
        before = getattr(lanes, "round_trips", 0)
        done = await together(first)
        trips = getattr(lanes, "round_trips", 0) - before
        second = [*bumps("m1"), ("m4", refuses_after_writing), *bumps("m2")]
        return done, await together(second), trips

    try:
        first, second, trips = run_async(lanes, writes)
    finally:
        if lanes is not store:
            lanes.close()
    assert first == [1, 1, 2, 1, "MemberNotFound", 3, 1]
    assert second == [2, "MemberNotFound", 2]
    pending = store.transact(
        lambda tx: {n: tx.members.get(program_id, n).account.pending for n in names}  # type: ignore[union-attr]
    )
    assert pending == {"m0": 3, "m1": 2, "m2": 2, "m3": 1, "m4": 0}
    if not isinstance(store, SqliteStore):
        # The first seven in one transaction: the first of each member side by side (their
        # reads in one round trip, their writes with m0's second read), then m0's second and
        # third, then COMMIT: four round trips, against eight one after the other.
        assert (lanes.batches, lanes.batched_writes) == (2, 10)  # type: ignore[attr-defined]
        assert trips == 4


def test_writes_to_many_members_at_once_share_a_server_s_two_write_lanes(store: Store) -> None:
    """32 writes to 32 members at once, on a store with its default pool: on PostgreSQL they
    go in two transactions (the two write lanes, `WRITE_LANES`), each two round trips (all its
    members' reads, then all the writes with `COMMIT`), and every write counts once. With a lane
    per pooled connection, as before, they took about eight, of about four writes each."""
    program_id = _program(store)
    names = [f"m{n}" for n in range(32)]
    for name in names:
        _member(store, program_id, name)

    async def writes() -> tuple[list[object], int]:
        before = getattr(store, "round_trips", 0)
        done = await asyncio.gather(
            *(store.write(_bump(program_id, name), lane=(program_id, name)) for name in names),
            return_exceptions=True,
        )
        return _named(done), getattr(store, "round_trips", 0) - before

    done, trips = run_async(store, writes)
    assert done == [1] * 32
    pending = store.transact(
        lambda tx: [tx.members.get(program_id, n).account.pending for n in names]  # type: ignore[union-attr]
    )
    assert pending == [1] * 32
    if not isinstance(store, SqliteStore):
        # Which lane a member takes is its key's hash: the odds that one lane got fewer than
        # two of the 32 (and so ran alone, outside `batches`) are about one in 60 million.
        assert (store.batches, store.batched_writes) == (2, 32)  # type: ignore[attr-defined]
        assert trips == 4


def test_batches_of_two_servers_take_their_members_locks_in_one_order(
    database_url: str, store: Store
) -> None:
    """Two servers' batches that write to the same members lock them in one order, so they
    queue behind each other instead of deadlocking, and each commits whole. Here both batches
    wait behind a third transaction holding both members, their writes arriving in opposite
    orders: in arrival order, once it ends each would hold one member and wait for the other,
    until PostgreSQL aborted one of them (after `deadlock_timeout`)."""
    if not isinstance(store, PostgresStore):
        pytest.skip("SQLite writes one transaction at a time")
    program_id = _program(store)
    for name in ("a", "b"):
        _member(store, program_id, name)
    servers = [PostgresStore(database_url, pool_size=1) for _ in range(2)]

    async def waiting_for_locks(watcher: psycopg.AsyncConnection[Any]) -> int:
        cursor = await watcher.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def race() -> list[int]:
        # Nothing prepared: through PgBouncer the next statement may run in another session.
        holder = await psycopg.AsyncConnection.connect(database_url, prepare_threshold=None)
        watcher = await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, prepare_threshold=None
        )
        try:
            await holder.execute(
                "SELECT pk FROM members WHERE program_id = %s FOR UPDATE", (program_id,)
            )
            first, second = servers
            writes = asyncio.gather(
                *(first.write(_bump(program_id, n), lane=(program_id, n)) for n in ("a", "b")),
                *(second.write(_bump(program_id, n), lane=(program_id, n)) for n in ("b", "a")),
            )
            deadline = time.monotonic() + 30
            while await waiting_for_locks(watcher) < 2:  # both batches wait behind the holder
                assert time.monotonic() < deadline, "the batches never reached the database"
            await holder.rollback()
            return list(await writes)
        finally:
            await holder.close()
            await watcher.close()
            await servers[1].aclose()

    try:
        outcomes = run_async(servers[0], race)
    finally:
        for server in servers:
            server.close()
    assert sorted(outcomes) == [1, 1, 2, 2]
    pending = store.transact(
        lambda tx: {n: tx.members.get(program_id, n).account.pending for n in "ab"}  # type: ignore[union-attr]
    )
    assert pending == {"a": 2, "b": 2}
    # Each server's two writes committed in one transaction: none was aborted and run again.
    assert [(s.batches, s.batched_writes) for s in servers] == [(1, 2), (1, 2)]


def test_lookups_that_find_every_connection_busy_share_a_round_trip(store: Store) -> None:
    """Lookups that arrive while every connection is busy wait together and go in one round
    trip per read lane (PostgreSQL), each with its own answer; one refused by its own code fails
    alone, and one whose statement fails takes nobody else's answer with it."""
    program_id = _program(store)
    names = [f"m{n}" for n in range(12)]
    for name in names:
        _member(store, program_id, name)
    # PostgreSQL: one connection, so that all but the first lookup find it busy.
    reads = store if isinstance(store, SqliteStore) else PostgresStore(store.url, pool_size=1)  # type: ignore[attr-defined]

    def member(name: str) -> Callable[[Tx], object]:
        return lambda tx: tx.members.get(program_id, name).member_id  # type: ignore[union-attr]

    def refuses(tx: Tx) -> None:
        tx.members.get(program_id, "m0")
        raise MemberNotFound("refused")

    def bad_statement(tx: Tx) -> None:
        tx.members.get(program_id, "nul\x00")  # PostgreSQL text holds no NUL: refused

    async def together(works: list[Callable[[Tx], object]]) -> list[object]:
        return _named(
            await asyncio.gather(*(reads.lookup(w) for w in works), return_exceptions=True)
        )

    async def lookups() -> tuple[list[object], int, list[object]]:
        await reads.lookup(member("m0"))  # the pool is open
        before = getattr(reads, "round_trips", 0)
        taken, release = asyncio.Event(), asyncio.Event()

        def holds(tx: Tx) -> object:
            taken.set()
            if not isinstance(store, SqliteStore):
                wait_for(release.wait())  # the one connection stays taken meanwhile
            return member("m0")(tx)

        holder = asyncio.ensure_future(reads.lookup(holds))
        await taken.wait()
        # Every lookup below starts (and queues) before the holder is woken: asyncio runs
        # what is scheduled in order.
        works = [member(name) for name in names[1:]] + [refuses]
        waiting = asyncio.gather(*(reads.lookup(w) for w in works), return_exceptions=True)
        release.set()
        first = [await holder, *_named(await waiting)]
        trips = getattr(reads, "round_trips", 0) - before
        second = await together([member("m1"), bad_statement, member("m2"), member("m3")])
        return first, trips, second

    try:
        first, trips, second = run_async(reads, lookups)
    finally:
        if reads is not store:
            reads.close()
    assert first == [*names, "MemberNotFound"]
    refused = None if isinstance(store, SqliteStore) else "DataError"  # SQLite: not found
    assert second == ["m1", refused, "m2", "m3"]
    if not isinstance(store, SqliteStore):
        # The first alone on the free connection; the twelve others in four read lanes, three
        # each, one round trip per lane: five in all, against thirteen one by one.
        assert trips == 5


def _bump(program_id: int, name: str) -> Callable[[Tx], int]:
    """A write adding one to member `name`'s pending points, answering the new count."""

    def work(tx: Tx) -> int:
        state = tx.members.state(program_id, name, now=NOW, lock=True)
        assert state is not None
        pending = state.member.account.pending + 1
        tx.members.save_account(state.member.pk, Account(pending=pending))
        return pending

    return work


def _named(outcomes: list[object]) -> list[object]:
    """Outcomes of `asyncio.gather(..., return_exceptions=True)`, errors by their class name."""
    return [type(o).__name__ if isinstance(o, Exception) else o for o in outcomes]


def _entry_for_lot(tx: Tx, program_id: int, pk: int, lot: Lot) -> None:
    entry = _entry(program_id, pk, lot.entry_id, seq=lot.seq, points=lot.remaining)
    tx.entries.insert(replace(entry, expires_at=lot.expires_at))


def _entry(program_id: int, pk: int, entry_id: str, *, seq: int, points: int) -> Entry:
    return Entry(
        id=entry_id,
        program_id=program_id,
        member_pk=pk,
        member_id="m",
        seq=seq,
        type=EntryType.AWARD,
        status=EntryStatus.POSTED,
        points=points,
        reason="r",
        reference=None,
        metadata=None,
        balance_after=None,
        created_at=NOW,
        available_at=None,
        expires_at=None,
        posted_at=None,
        created_by="key_test",
    )


def test_replies_are_kept_per_program_and_purged_by_age(store: Store) -> None:
    first, second = _program(store, "a"), _program(store, "b")
    reply = StoredReply("f1", 201, b'{"ok":true}')
    store.transact(lambda tx: tx.replies.put(first, "k", reply, now=NOW))
    assert store.transact(lambda tx: tx.replies.claim(first, "k"))
    assert store.transact(lambda tx: tx.replies.get(first, "k")) == reply
    assert store.transact(lambda tx: tx.replies.get(second, "k")) is None
    assert store.transact(lambda tx: tx.replies.purge(before=NOW)) == 0
    assert store.transact(lambda tx: tx.replies.purge(before=NOW + timedelta(seconds=1))) == 1
    assert store.transact(lambda tx: tx.replies.get(first, "k")) is None


def test_a_key_is_revoked_once(store: Store) -> None:
    program_id = _program(store)
    store.transact(
        lambda tx: tx.keys.insert(
            key_id="key_1",
            program_id=program_id,
            scope=Scope.READ.value,
            secret_hash="h",
            prefix="tally_x",
            now=NOW,
        )
    )
    found = store.transact(lambda tx: tx.keys.find("h"))
    assert found is not None and (found.scope, found.revoked) == ("read", False)
    assert store.transact(lambda tx: tx.keys.revoke("key_1", now=NOW))
    assert not store.transact(lambda tx: tx.keys.revoke("key_1", now=NOW))
    revoked = store.transact(lambda tx: tx.keys.find("h"))
    assert revoked is not None and revoked.revoked


def _render(posting: Posting) -> tuple[int, bytes]:
    return 201, f"{posting.entry.id}:{posting.balance}".encode()


def test_concurrent_writes_with_failures_mixed_in_each_get_their_own_outcome(
    store: Store,
) -> None:
    """Many requests at once (one group commit on SQLite): failures undo only themselves."""
    program_id = _program(store)
    for member_id in ("a", "b"):
        _member(store, program_id, member_id)
    ledger = Ledger(store, clock=lambda: NOW)

    async def award(member_id: str, points: int, key: str | None = None) -> object:
        command = AwardCommand(member_id, points, "r")
        idem = None if key is None else Idempotency(key, "fp-" + key)
        return await ledger.points.award(
            program_id, command, created_by="key_test", idempotency=idem, render=_render
        )

    async def deduct(member_id: str, points: int) -> object:
        command = DeductCommand(member_id, points, "r")
        return await ledger.points.deduct(
            program_id, command, created_by="key_test", idempotency=None, render=_render
        )

    async def everything() -> list[object]:
        calls = []
        for i in range(60):
            calls += [award("a", 10), award("ghost", 1), deduct("b", 1), award("b", 1, f"k{i}")]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = run_async(store, everything)
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds.count("MemberNotFound") == 60
    assert kinds.count("Reply") + kinds.count("InsufficientPoints") == 180
    balances = store.transact(
        lambda tx: [tx.members.get(program_id, m).account for m in ("a", "b")]  # type: ignore[union-attr]
    )
    assert balances[0].balance == 600
    deducted = sum(1 for o in outcomes[2::4] if not isinstance(o, InsufficientPoints))
    assert balances[1].balance == 60 - deducted and balances[1].lifetime_deducted == deducted
    if isinstance(store, SqliteStore):
        assert store.commits < store.committed_jobs, "writes were not grouped into commits"


def test_overlapping_bulks_lock_in_one_global_order_and_never_deadlock(store: Store) -> None:
    """Two bulk awards of 1,200 members each (more locks than one query takes), sharing 900 of
    them and listing them in opposite orders, run at the same time round after round: the locks
    are taken in one order across queries, so the database never aborts either as a deadlock."""
    program_id = _program(store)
    names = [f"m{i:04}" for i in range(1_500)]
    enrolment = random.Random(11).sample(names, len(names))  # primary keys in another order

    def enrol(tx: Tx) -> None:
        for name in enrolment:
            tx.members.insert(program_id, Profile(name), now=NOW)

    store.transact(enrol)
    rounds = 6
    start = threading.Barrier(2, timeout=60)

    def bulk_awards(member_ids: list[str]) -> None:
        """What `POST /v1/points/award/bulk` does in its transaction: one point to each."""

        def work(tx: Tx) -> None:
            states = accounts.locked_members(tx, program_id, member_ids, NOW)
            members = {member_id: state.member for member_id, state in states.items()}
            command = BulkCommand([AwardCommand(m, 1, "bulk") for m in member_ids])
            outcome = point_rules.plan_bulk(
                command, members, expire_after_days=None, now=NOW, created_by="key_test"
            )
            assert outcome.failures == []
            accounts.write_awards(tx, [posting for _, posting in outcome.postings], NOW)

        try:
            for _ in range(rounds):
                start.wait()
                store.transact(work)
        except BaseException:
            start.abort()  # the other thread stops waiting for this one
            raise

    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(bulk_awards, ids) for ids in (names[:1_200], names[300:][::-1])]
        for run in runs:
            run.result(timeout=300)
    everyone = store.transact(lambda tx: tx.members.page(program_id, offset=0, limit=2_000))
    balances = {member.member_id: member.account.balance for member in everyone}
    assert balances == {
        name: rounds * ((name in names[:1_200]) + (name in names[300:])) for name in names
    }
    assert verify(store) == []


def test_an_erased_member_keeps_its_first_erasure_time_and_loses_its_profile(
    store: Store,
) -> None:
    program_id = _program(store)
    store.transact(
        lambda tx: tx.members.insert(program_id, Profile("m", "m@example.com", "M", "{}"), now=NOW)
    )
    member = store.transact(lambda tx: tx.members.get(program_id, "m"))
    assert member is not None and member.erased_at is None
    later = NOW + timedelta(days=1)
    for moment in (NOW, later):
        store.transact(lambda tx, at=moment: tx.members.erase(member.pk, now=at))
    erased = store.transact(lambda tx: tx.members.get(program_id, "m"))
    assert erased is not None
    assert (erased.profile, erased.erased_at) == (Profile("m"), NOW)


def test_copies_are_found_by_their_text_and_rewritten_in_place(store: Store) -> None:
    from tally.domain import Event

    first, second = _program(store, "a"), _program(store, "b")
    events = [
        Event("evt_1", first, "member.created", NOW, '{"data":{"member_id":"m","name":"N"}}'),
        Event("evt_2", first, "member.created", NOW, '{"data":{"member_id":"x","name":"X"}}'),
        Event("evt_3", second, "member.created", NOW, '{"data":{"member_id":"m","name":"N"}}'),
    ]
    store.transact(lambda tx: tx.events.append(events))
    before = store.transact(lambda tx: tx.events.position(first, "evt_1"))
    found = store.transact(lambda tx: tx.events.containing(first, '"member_id":"m"'))
    assert [event.id for event in found] == ["evt_1"]
    store.transact(lambda tx: tx.events.rewrite("evt_1", '{"data":{"member_id":"m"}}'))
    listed = store.transact(lambda tx: tx.events.after(first, None, limit=10))
    assert [(position, event.body) for position, event in listed][0] == (
        before,
        '{"data":{"member_id":"m"}}',
    )
    for program_id, key in ((first, "k1"), (first, "k2"), (second, "k1")):
        body = f'{{"member_id":"{"m" if key == "k1" else "x"}","name":"N"}}'.encode()
        store.transact(
            lambda tx, p=program_id, k=key, b=body: tx.replies.put(
                p, k, StoredReply("f", 201, b), now=NOW
            )
        )
    replies = store.transact(lambda tx: tx.replies.containing(first, b'"member_id":"m"'))
    assert replies == {"k1": b'{"member_id":"m","name":"N"}'}
    store.transact(lambda tx: tx.replies.rewrite(first, "k1", b'{"member_id":"m"}'))
    assert store.transact(lambda tx: tx.replies.get(first, "k1")) == StoredReply(
        "f", 201, b'{"member_id":"m"}'
    )
    assert store.transact(lambda tx: tx.replies.get(second, "k1")) == StoredReply(
        "f", 201, b'{"member_id":"m","name":"N"}'
    )


def test_a_checkpoint_is_read_back_as_the_start_of_a_past_balance(store: Store) -> None:
    pk = _member(store, _program(store))
    kept = Account(balance=70, lifetime_earned=100, lifetime_deducted=30)
    at = NOW + timedelta(hours=1)
    store.transact(lambda tx: tx.reports.checkpoint(pk, seq=256, at=at, account=kept))
    before = store.transact(lambda tx: tx.reports.past(pk, at=at - timedelta(microseconds=1)))
    assert (before.checkpoint, before.entries, before.last_seq) == (Account(), [], 0)
    then = store.transact(lambda tx: tx.reports.past(pk, at=at))
    assert (then.checkpoint, then.last_seq, then.pending) == (kept, 256, 0)


def test_rolled_up_days_and_the_entries_after_them_add_up_the_same(store: Store) -> None:
    program_id = _program(store)
    ledger = Ledger(store, clock=lambda: NOW)
    store.transact(lambda tx: tx.members.insert(program_id, Profile("m"), now=NOW))

    async def awards() -> None:
        for points in (5, 7):
            await ledger.points.award(
                program_id,
                AwardCommand("m", points, "r"),
                created_by="key_test",
                idempotency=None,
                render=lambda p: (201, b""),
            )

    run_async(store, awards)
    day, next_day = NOW, NOW + timedelta(days=1)

    def totals(rolled: datetime | None) -> list[tuple[datetime, str, int]]:
        return store.transact(
            lambda tx: tx.reports.day_totals(
                program_id, start=day, end=next_day, rolled_until=rolled
            )
        )

    assert totals(None) == [(day, "award", 12)]
    store.transact(lambda tx: tx.reports.roll_up(program_id, start=None, end=next_day))
    store.transact(lambda tx: tx.reports.roll_up(program_id, start=None, end=next_day))  # again
    assert store.transact(lambda tx: tx.reports.rolled_up_until(program_id)) == next_day
    assert totals(next_day) == [(day, "award", 12)]
    assert verify(store) == []


def test_a_connection_prepares_statements_only_when_its_server_session_is_its_own(
    database_url: str,
) -> None:
    """Straight to PostgreSQL a connection prepares what it runs often; through PgBouncer
    (`pytest --pgbouncer` hands this test its database through one) it prepares nothing, as its
    next transaction may run in another client's session."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server sessions")
    with psycopg.connect(database_url, autocommit=True, prepare_threshold=None) as conn:
        prepare_if_own_session(conn)
        assert (conn.prepare_threshold is not None) == (POOLER.port is None)
