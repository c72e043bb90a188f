"""Migration 0004 (transfers) on a database that already holds a ledger: the lots keep their
points and draws, each becomes its own entry's lot (`source_id`), the new counters start at zero,
`tally verify` finds nothing, and the upgraded ledger takes transfers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from yoyo import get_backend, read_migrations

from tally.commands import TransferCommand
from tally.maintenance import run_async, verify
from tally.service import Ledger
from tally.storage import open_store
from tests.conftest import POSTGRES_URL
from tests.support import postgres_copy

NOW = 1_767_268_800_000_000  # 2026-01-01T12:00Z in microseconds


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    if POSTGRES_URL is None:
        pytest.skip("TALLY_TEST_POSTGRES_URL is not set")
    with postgres_copy(POSTGRES_URL, None, prefix="tally_migration") as url:
        yield url


def migrate_before_transfers(url: str) -> None:
    backend_name = "sqlite" if url.startswith("sqlite") else "postgres"
    folder = resources.files("tally.storage") / "migrations" / backend_name
    older = read_migrations(str(folder)).filter(lambda m: m.id < "0004")
    yoyo_url = url if backend_name == "sqlite" else "postgresql+psycopg://" + url.split("://")[1]
    backend = get_backend(yoyo_url)
    try:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(older))
    finally:
        backend.connection.close()


# A ledger as 0003 stored it: member m earned 100 (one lot) and had 30 deducted from it.
OLD_ROWS: list[tuple[str, tuple[Any, ...]]] = [
    ("INSERT INTO programs (id, name, created_at) VALUES (1, 'acme', ?)", (NOW,)),
    (
        "INSERT INTO members (pk, program_id, member_id, created_at, balance, lifetime_earned, "
        "lifetime_deducted, last_seq, entry_count) VALUES (1, 1, 'm', ?, 70, 100, 30, 2, 2)",
        (NOW,),
    ),
    (
        "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
        "balance_after, created_at, effective_at) "
        "VALUES ('txn_award', 1, 1, 1, 'award', 'posted', 100, 'a', 100, ?, ?)",
        (NOW, NOW),
    ),
    (
        "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
        "balance_after, created_at, effective_at) "
        "VALUES ('txn_deduct', 1, 1, 2, 'deduct', 'posted', -30, 'd', 70, ?, ?)",
        (NOW, NOW),
    ),
    (
        "INSERT INTO lots (entry_id, member_pk, seq, points, remaining, expires_at) "
        "VALUES ('txn_award', 1, 1, 100, 70, 9223372036854775807)",
        (),
    ),
    ("INSERT INTO draws (spend_id, lot_id, points) VALUES ('txn_deduct', 'txn_award', 30)", ()),
]

RECEIVER = "INSERT INTO members (pk, program_id, member_id, created_at) VALUES (2, 1, 'n', 0)"


def write_old_rows(url: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for sql, params in [*OLD_ROWS, (RECEIVER, ())]:
                conn.execute(sql, params)
        return
    with psycopg.connect(url) as conn:
        for sql, params in [*OLD_ROWS, (RECEIVER, ())]:
            conn.execute(sql.replace("?", "%s"), params)
        # Identity columns: let later inserts pick up after the rows written by hand.
        conn.execute("SELECT setval(pg_get_serial_sequence('members', 'pk'), 10)")
        conn.execute("SELECT setval(pg_get_serial_sequence('programs', 'id'), 10)")


def test_an_existing_ledger_upgrades_and_takes_transfers(empty_url: str) -> None:
    migrate_before_transfers(empty_url)
    write_old_rows(empty_url)
    store = open_store(empty_url)
    try:
        assert store.migrate()[:1] == ["0004.transfers"]  # and any later ones
        assert verify(store) == []
        if empty_url.startswith("sqlite"):
            with sqlite3.connect(empty_url.removeprefix("sqlite:///")) as conn:
                assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        member = store.transact(lambda tx: tx.members.get(1, "m"))
        assert member is not None
        account = member.account
        assert (account.balance, account.lifetime_transferred_in) == (70, 0)
        lots = store.transact(lambda tx: tx.lots.open(1))
        assert [(lot.entry_id, lot.remaining, lot.source) for lot in lots] == [
            ("txn_award", 70, None)
        ]
        ledger = Ledger(store, clock=lambda: datetime(2026, 1, 2, tzinfo=UTC))
        reply = run_async(
            store,
            lambda: ledger.transfers.transfer(
                1,
                TransferCommand("m", "n", 50, "after the upgrade"),
                idempotency=None,
                render=lambda t: (201, t.received.entry.id.encode()),
            ),
        )
        assert reply.status == 201
        assert verify(store) == []
    finally:
        store.close()
