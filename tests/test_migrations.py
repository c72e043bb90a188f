"""Migrations on a database that already holds a ledger.

0004 (transfers): the lots keep their points and draws, each becomes its own entry's lot
(`source_id`), the new counters start at zero, `tally verify` finds nothing, and the upgraded
ledger takes transfers. 0008 (created_by): rows written before it read `unknown`, expiries
`system`, and every new row names the key that made it. 0005 (reversals): no debt, nothing
reversed, `tally verify` finds nothing, and the upgraded ledger takes reversals, into debt and
out of it. 0007 (reports): a busy member's balance checkpoints are built from its rows,
and cancelled awards get the time they were cancelled."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest
from yoyo import read_migrations

from tally.commands import ReverseCommand, TransferCommand
from tally.maintenance import run_async, verify
from tally.service import Ledger
from tally.storage import open_store
from tally.storage.migrate import open_backend
from tally.storage.sql.rows import from_micros
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


def migrate_before(url: str, first_left_out: str) -> None:
    """Apply the migrations whose ids sort before `first_left_out` ("0004")."""
    backend_name = "sqlite" if url.startswith("sqlite") else "postgres"
    folder = resources.files("tally.storage") / "migrations" / backend_name
    older = read_migrations(str(folder)).filter(lambda m: m.id < first_left_out)
    yoyo_url = url if backend_name == "sqlite" else "postgresql+psycopg://" + url.split("://")[1]
    backend = open_backend(yoyo_url, backend_name=backend_name)
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
    migrate_before(empty_url, "0004")
    write_old_rows(empty_url)
    store = open_store(empty_url)
    try:
        applied = store.migrate()
        assert applied[0] == "0004.transfers" and applied == sorted(applied)
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
                created_by="key_test",
                idempotency=None,
                render=lambda t: (201, t.received.entry.id.encode()),
            ),
        )
        assert reply.status == 201
        assert verify(store) == []
    finally:
        store.close()


# A ledger as 0004 stored it: member m as above; member n earned 20 that expired.
ROWS_0004: list[tuple[str, tuple[Any, ...]]] = [
    *OLD_ROWS[:4],
    (
        "INSERT INTO lots (entry_id, member_pk, seq, points, remaining, expires_at, source_id) "
        "VALUES ('txn_award', 1, 1, 100, 70, 9223372036854775807, 'txn_award')",
        (),
    ),
    OLD_ROWS[5],
    (
        "INSERT INTO members (pk, program_id, member_id, created_at, balance, lifetime_earned, "
        "lifetime_expired, last_seq, entry_count) VALUES (2, 1, 'n', ?, 0, 20, 20, 2, 2)",
        (NOW,),
    ),
    (
        "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
        "balance_after, created_at, effective_at, expires_at) "
        "VALUES ('txn_n_award', 1, 2, 1, 'award', 'posted', 20, 'a', 20, ?, ?, ?)",
        (NOW, NOW, NOW + 1),
    ),
    (
        "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
        "balance_after, created_at, effective_at) "
        "VALUES ('txn_expire', 1, 2, 2, 'expire', 'posted', -20, 'e', 0, ?, ?)",
        (NOW + 1, NOW + 1),
    ),
    (
        "INSERT INTO lots (entry_id, member_pk, seq, points, remaining, expires_at, source_id) "
        "VALUES ('txn_n_award', 2, 1, 20, 0, ?, 'txn_n_award')",
        (NOW + 1,),
    ),
    ("INSERT INTO draws (spend_id, lot_id, points) VALUES ('txn_expire', 'txn_n_award', 20)", ()),
]


def test_rows_from_before_created_by_read_unknown_and_expiries_system(empty_url: str) -> None:
    migrate_before(empty_url, "0008")
    with contextlib.closing(_connect(empty_url)) as conn:
        for sql, params in ROWS_0004:
            conn.execute(_placeholders(empty_url, sql), params)
        if not empty_url.startswith("sqlite"):
            conn.execute("SELECT setval(pg_get_serial_sequence('members', 'pk'), 10)")
        conn.commit()
    store = open_store(empty_url)
    try:
        assert "0008.created_by" in store.migrate()
        assert verify(store) == []
        makers = {
            entry_id: store.transact(lambda tx, e=entry_id: tx.entries.get(1, e)).created_by  # type: ignore[union-attr, misc]
            for entry_id in ("txn_award", "txn_deduct", "txn_expire")
        }
        assert makers == {"txn_award": "unknown", "txn_deduct": "unknown", "txn_expire": "system"}
        ledger = Ledger(store, clock=lambda: datetime(2026, 1, 2, tzinfo=UTC))
        reply = run_async(
            store,
            lambda: ledger.transfers.transfer(
                1,
                TransferCommand("m", "n", 50, "after the upgrade"),
                created_by="key_after",
                idempotency=None,
                render=lambda t: (201, t.received.entry.id.encode()),
            ),
        )
        received = store.transact(lambda tx: tx.entries.get(1, reply.body.decode()))
        assert received is not None and received.created_by == "key_after"
    finally:
        store.close()


def _connect(url: str) -> Any:
    if url.startswith("sqlite"):
        return sqlite3.connect(url.removeprefix("sqlite:///"))
    return psycopg.connect(url)


def _placeholders(url: str, sql: str) -> str:
    return sql if url.startswith("sqlite") else sql.replace("?", "%s")


def test_an_existing_ledger_upgrades_and_takes_reversals(empty_url: str) -> None:
    migrate_before(empty_url, "0004")
    write_old_rows(empty_url)
    migrate_before(empty_url, "0005")  # the ledger as 0004 left it
    store = open_store(empty_url)
    try:
        assert store.migrate()[0] == "0005.reversals"
        assert verify(store) == []
        member = store.transact(lambda tx: tx.members.get(1, "m"))
        assert member is not None and member.account.balance == 70
        award = store.transact(lambda tx: tx.entries.get(1, "txn_award"))
        assert award is not None and (award.reverses, award.points_reversed) == (None, 0)
        ledger = Ledger(store, clock=lambda: datetime(2026, 1, 2, tzinfo=UTC))

        def reverse(transaction_id: str, cmd: ReverseCommand) -> int:
            reply = run_async(
                store,
                lambda: ledger.reversals.reverse(
                    1,
                    transaction_id,
                    cmd,
                    created_by="key_after",
                    idempotency=None,
                    render=lambda r: (201, str(r.account.balance).encode()),
                ),
            )
            assert reply.status == 201
            return int(reply.body)

        assert reverse("txn_award", ReverseCommand("returned", allow_negative=True)) == -30
        assert verify(store) == []
        assert reverse("txn_deduct", ReverseCommand("refunded", 20)) == -10  # pays the debt
        assert verify(store) == []
        if empty_url.startswith("sqlite"):
            with sqlite3.connect(empty_url.removeprefix("sqlite:///")) as conn:
                assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        store.close()


MINUTE = 60_000_000


def busy_ledger() -> tuple[list[tuple[str, tuple[Any, ...]]], list[tuple[int, int, int]]]:
    """Rows of a member `m` with 600 entries as 0004 stores them (an award of 10, then a deduct
    of 3 drawn from the oldest lots, a minute apart), and two cancelled pending awards, one
    with its `transaction.cancelled` event still in the feed. Also (time, balance, deducted)
    after each entry."""
    rows: list[tuple[str, tuple[Any, ...]]] = [
        ("INSERT INTO programs (id, name, created_at) VALUES (1, 'acme', ?)", (NOW,))
    ]
    entry = (
        "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
        "balance_after, created_at, effective_at, available_at) "
        "VALUES (?, 1, 1, ?, ?, ?, ?, 'r', ?, ?, ?, ?)"
    )
    lots: dict[str, int] = {}
    draws: list[tuple[str, tuple[Any, ...]]] = []
    balance = deducted = 0
    seen = []
    for seq in range(1, 601):
        at = NOW + seq * MINUTE
        if seq % 2:
            balance += 10
            lots[f"txn_{seq}"] = 10
            rows.append((entry, (f"txn_{seq}", seq, "award", "posted", 10, balance, at, at, None)))
        else:
            balance -= 3
            deducted += 3
            rows.append((entry, (f"txn_{seq}", seq, "deduct", "posted", -3, balance, at, at, None)))
            need = 3
            for lot_id, left in lots.items():
                take = min(left, need)
                if take:
                    lots[lot_id] -= take
                    need -= take
                    draws.append(
                        (
                            "INSERT INTO draws (spend_id, lot_id, points) VALUES (?, ?, ?)",
                            (f"txn_{seq}", lot_id, take),
                        )
                    )
                if not need:
                    break
        seen.append((at, balance, deducted))
    for lot_id, left in lots.items():
        rows.append(
            (
                "INSERT INTO lots (entry_id, member_pk, seq, points, remaining, expires_at, "
                "source_id) VALUES (?, 1, ?, 10, ?, 9223372036854775807, ?)",
                (lot_id, int(lot_id.removeprefix("txn_")), left, lot_id),
            )
        )
    rows += draws  # after the lots they draw on
    later = NOW + 601 * MINUTE
    for seq, name in ((601, "txn_c1"), (602, "txn_c2")):
        rows.append((entry, (name, seq, "award", "cancelled", 5, None, NOW, NOW, later)))
    rows.append(
        (
            "INSERT INTO events (program_id, id, type, created_at, body) "
            "VALUES (1, 'evt_1', 'transaction.cancelled', ?, ?)",
            (NOW + 30 * MINUTE, '{"data": {"transaction_id": "txn_c1"}}'),
        )
    )
    rows.insert(
        1,
        (
            "INSERT INTO members (pk, program_id, member_id, created_at, balance, "
            "lifetime_earned, lifetime_deducted, last_seq, entry_count) "
            "VALUES (1, 1, 'm', ?, ?, ?, ?, 602, 602)",
            (NOW, balance, balance + deducted, deducted),
        ),
    )
    return rows, seen


def write_rows(url: str, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for sql, params in rows:
                conn.execute(sql, params)
        return
    with psycopg.connect(url) as conn:
        for sql, params in rows:
            conn.execute(sql.replace("?", "%s"), params)
        conn.execute("SELECT setval(pg_get_serial_sequence('members', 'pk'), 10)")
        conn.execute("SELECT setval(pg_get_serial_sequence('programs', 'id'), 10)")


def test_an_existing_ledger_gets_its_balance_checkpoints_and_cancellation_times(
    empty_url: str,
) -> None:
    migrate_before(empty_url, "0005")
    rows, seen = busy_ledger()
    write_rows(empty_url, rows)
    store = open_store(empty_url)
    try:
        assert "0007.reports" in store.migrate()
        assert verify(store) == []
        # Kept after positions 256 and 512, as the write path keeps them.
        past = store.transact(lambda tx: tx.reports.past(1, at=from_micros(seen[299][0])))
        assert past.checkpoint.balance == seen[255][1]
        assert past.checkpoint.lifetime_deducted == seen[255][2]
        assert past.last_seq == 300 and len(past.entries) == 300 - 256
        ledger = Ledger(store, clock=lambda: datetime(2026, 1, 3, tzinfo=UTC))
        for index in (0, 254, 255, 256, 511, 512, 599):
            moment, balance, deducted = seen[index]
            view = run_async(
                store, lambda m=moment: ledger.reports.balance_as_of(1, "m", from_micros(m))
            )
            assert (view.account.balance, view.account.lifetime_deducted) == (balance, deducted)
        # txn_c1 was cancelled when its event says (30 minutes in), txn_c2 at its creation.
        for minutes, pending in ((0, 5), (29, 5), (30, 0)):
            moment = from_micros(NOW + minutes * MINUTE)
            view = run_async(store, lambda m=moment: ledger.reports.balance_as_of(1, "m", m))
            assert view.account.pending == pending, minutes
    finally:
        store.close()
