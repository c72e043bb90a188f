"""What the command line runs directly on a store: keys, first run, verification, sweeping;
and on a SQLite file: backups and restores."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from tally import ids
from tally.commands import Clock, CreatedKey, SweepReport
from tally.domain import (
    EntryType,
    Program,
    Scope,
)
from tally.keys import NewKey, generate_key
from tally.ports import LedgerCheck, Store, Tx
from tally.service import Ledger, WebhookPolicy, system_clock

T = TypeVar("T")


def create_key(store: Store, *, program: str, scope: Scope, now: datetime) -> CreatedKey:
    new = generate_key()
    key_id = ids.new_id("key_", now)

    def work(tx: Tx) -> CreatedKey:
        existing = tx.programs.names()
        found = tx.programs.ensure(program, now=now)
        created = _insert_key(tx, found, scope, new, key_id=key_id, now=now)
        if program in existing:
            return created
        return replace(created, new_program=True, other_programs=tuple(existing))

    return store.transact(work)


def bootstrap(store: Store, *, now: datetime) -> CreatedKey | None:
    """On an empty database: the `default` program and a write key (None if not empty).

    One transaction, so that several servers starting at once on one empty database make one
    program and one key between them, printed by one of them.
    """
    new = generate_key()
    key_id = ids.new_id("key_", now)

    def work(tx: Tx) -> CreatedKey | None:
        if tx.programs.count() > 0:
            return None
        program = tx.programs.ensure("default", now=now)
        # Another first run may have begun since the count. Its `default` row is unique, so
        # `ensure` waited for it to commit (PostgreSQL; SQLite's writers take turns anyway),
        # and it made a key: that run prints it, this one makes none.
        if any(key.program_id == program.id for key in tx.keys.all()):
            return None
        return _insert_key(tx, program, Scope.WRITE, new, key_id=key_id, now=now)

    return store.transact(work)


def _insert_key(
    tx: Tx, program: Program, scope: Scope, new: NewKey, *, key_id: str, now: datetime
) -> CreatedKey:
    tx.keys.insert(
        key_id=key_id,
        program_id=program.id,
        scope=scope.value,
        secret_hash=new.secret_hash,
        prefix=new.display_prefix,
        now=now,
    )
    return CreatedKey(key_id, program.name, scope, new.secret)


@dataclass(frozen=True, slots=True)
class Mismatch:
    member: str
    problem: str


_COUNTER_OF = {
    EntryType.AWARD: "lifetime_earned",
    EntryType.REDEEM: "lifetime_redeemed",
    EntryType.REFUND: "lifetime_redeemed",
    EntryType.DEDUCT: "lifetime_deducted",
    EntryType.EXPIRE: "lifetime_expired",
    EntryType.TRANSFER_IN: "lifetime_transferred_in",
    EntryType.TRANSFER_OUT: "lifetime_transferred_out",
}
_COUNTING_UP = (EntryType.AWARD, EntryType.TRANSFER_IN)


def _recount(check: LedgerCheck) -> list[Mismatch]:
    """Compare one member's stored counters with what its rows add up to."""
    member = check.member
    name = f"{member.program_id}/{member.member_id}"
    found = [
        Mismatch(name, f"{entry_id} has balance_after {stored}, the chain gives {running}")
        for entry_id, stored, running in check.chain_breaks
    ]
    counters = dict.fromkeys(_COUNTER_OF.values(), 0)
    for kind, points in check.posted_sums.items():
        if kind == EntryType.REVERSAL:  # counted below, by what each reverses
            continue
        # Awards and transfers in count up by their points; spends (and transfers out) by their
        # size; a refund takes a redemption back.
        up = EntryType(kind) in _COUNTING_UP
        counters[_COUNTER_OF[EntryType(kind)]] += points if up else -points
    # A reversal of an award (negative) lowers lifetime_earned; of a deduct (positive) lowers
    # lifetime_deducted: either way, added to the counter as it stands.
    counters["lifetime_earned"] += check.reversed_sums.get(EntryType.AWARD, 0)
    counters["lifetime_deducted"] -= check.reversed_sums.get(EntryType.DEDUCT, 0)
    expected = {
        **counters,
        "balance": sum(check.posted_sums.values()),
        "pending": check.pending_total,
        "entry_count": check.entry_count,
    }
    stored = member.account
    for label, want in expected.items():
        have = getattr(stored, label)
        if want != have:
            found.append(Mismatch(name, f"{label} is {have}, the ledger gives {want}"))
    # Lots hold the balance; a balance below zero is a debt, owed to reversals by no lot.
    if check.open_lot_total != max(stored.balance, 0):
        found.append(
            Mismatch(name, f"open lots hold {check.open_lot_total}, balance is {stored.balance}")
        )
    held, owed = check.held_and_owed
    if held and owed:
        found.append(Mismatch(name, f"holds {held} points and owes {owed} at once"))
    if check.owed != max(-stored.balance, 0):
        found.append(
            Mismatch(name, f"reversals are owed {check.owed}, balance is {stored.balance}")
        )
    return found


def verify(store: Store) -> list[Mismatch]:
    """Recompute every counter (and the program report's running totals) from the ledger rows;
    every difference found, or []."""

    def work(tx: Tx) -> list[Mismatch]:
        found = [problem for check in tx.audit.ledger_checks() for problem in _recount(check)]
        for entry_id, should, drawn in tx.audit.unbalanced_spends():
            found.append(
                Mismatch(entry_id, f"accounts for {should} points, its draws (or lots) for {drawn}")
            )
        for entry_id, stored, total in tx.audit.unbalanced_reversals():
            found.append(
                Mismatch(entry_id, f"points_reversed is {stored}, its reversals add up to {total}")
            )
        for entry_id in tx.audit.stray_reversals():
            found.append(
                Mismatch(
                    entry_id,
                    "is not a reversal of a posted award (negative) or deduct (positive) "
                    "of its own member",
                )
            )
        # The program report's running totals, day by day, against the entries they add up.
        for program_id, day, kind, stored, actual in tx.audit.rollup_differences():
            found.append(
                Mismatch(
                    f"program {program_id}",
                    f"the report's {kind} total of {day.date()} is {stored}, "
                    f"the ledger gives {actual}",
                )
            )
        return found

    return store.transact(work)


def run_async(store: Store, main: Callable[[], Awaitable[T]]) -> T:
    """`asyncio.run(main())` for code outside the server, releasing what `store` tied to that
    event loop (PostgreSQL's async pool) before the loop closes."""

    async def guarded() -> T:
        try:
            return await main()
        finally:
            await store.aclose()

    return asyncio.run(guarded())


def sweep_now(
    store: Store, *, clock: Clock = system_clock, webhooks: WebhookPolicy | None = None
) -> SweepReport:
    """`tally sweep`: apply everything due, then drop expired idempotency replies, and events
    and finished webhook deliveries older than the retention period."""
    return run_async(store, Ledger(store, clock=clock, webhooks=webhooks).lifecycle.sweep)


# Backups. SQLite's online backup API copies one consistent snapshot while servers keep reading
# and writing (WAL lets a reader and a writer run together). PostgreSQL has its own tools.

POSTGRES_BACKUPS = (
    "PostgreSQL databases are backed up with PostgreSQL's own tools: "
    "`pg_dump --format=custom --file=tally.dump URL` while Tally serves, and "
    "`pg_restore --dbname=URL tally.dump` into an empty database (see the README, Operations)."
)


class BackupError(Exception):
    """A backup or restore that cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Copied:
    """A database copied by `backup` or `restore`."""

    path: Path
    pages: int
    size: int


def backup(database_url: str, destination: Path, *, overwrite: bool = False) -> Copied:
    """Write a consistent copy of the SQLite database at `database_url` to `destination`, safe
    while servers use it. The copy is checked, then moved into place: `destination` is never a
    half-written file."""
    source = _sqlite_path(database_url, "tally backup")
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    _check_writable(destination, overwrite=overwrite, what="the backup")
    if destination.exists() and destination.resolve() == source.resolve():
        raise BackupError(f"{destination} is the database itself; choose another file")
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    try:
        with closing(sqlite3.connect(f"file:{quote(str(source))}?mode=rw", uri=True)) as live:
            with closing(sqlite3.connect(partial)) as copy:
                live.backup(copy)  # in one step: one snapshot, whatever writers do meanwhile
                pages = _checked(copy, partial)
        _fsync(partial)
        os.replace(partial, destination)
        _fsync(destination.parent)
    except sqlite3.Error as error:
        raise BackupError(f"cannot back up {source}: {error}") from None
    except OSError as error:
        raise BackupError(f"cannot write {destination}: {error.strerror or error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return Copied(destination, pages, destination.stat().st_size)


def restore(backup_path: Path, database_url: str, *, overwrite: bool = False) -> Copied:
    """Put a backup made by `backup` in place of the SQLite database at `database_url`. Every
    server on it must be stopped: a database still open elsewhere is refused."""
    target = _sqlite_path(database_url, "tally restore")
    if not backup_path.is_file():
        raise BackupError(f"there is no backup at {backup_path}")
    _check_writable(target, overwrite=overwrite, what="the database")
    # immutable: nobody writes a backup, so SQLite reads it without locks or a -shm file.
    uri = f"file:{quote(str(backup_path))}?mode=ro&immutable=1"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as saved:
            _checked(saved, backup_path)
            tables = {row[0] for row in saved.execute("SELECT name FROM sqlite_master")}
            if not {"members", "entries"} <= tables:
                raise BackupError(f"{backup_path} is a SQLite database, but not a Tally one")
            with closing(sqlite3.connect(target, isolation_level=None, timeout=0)) as live:
                try:
                    # Leaving WAL mode needs every other connection closed: a running server
                    # holds one, so this is where a restore under a live server stops.
                    live.execute("PRAGMA journal_mode = DELETE")
                except sqlite3.OperationalError:
                    raise BackupError(
                        f"the database {target} is in use (is `tally serve` running on it?); "
                        "stop every server on it first"
                    ) from None
                saved.backup(live)  # one transaction: the old content stays if this fails
                live.execute("PRAGMA journal_mode = WAL")
                pages = _checked(live, target)
    except sqlite3.DatabaseError as error:
        raise BackupError(f"cannot restore {backup_path}: {error}") from None
    except OSError as error:
        raise BackupError(f"cannot write {target}: {error.strerror or error}") from None
    return Copied(target, pages, target.stat().st_size)


def _sqlite_path(database_url: str, command: str) -> Path:
    from tally.storage.sqlite import path_from_url

    if database_url.split("://", 1)[0] in ("postgresql", "postgres"):
        raise BackupError(f"{command} works on SQLite databases. {POSTGRES_BACKUPS}")
    try:
        return path_from_url(database_url)
    except ValueError as error:
        raise BackupError(str(error)) from None


def _check_writable(path: Path, *, overwrite: bool, what: str) -> None:
    if path.is_dir():
        raise BackupError(f"{path} is a directory; name the file for {what}")
    if not path.parent.is_dir():
        raise BackupError(f"cannot write {what} to {path}: {path.parent} is not a directory")
    if path.exists() and path.stat().st_size > 0 and not overwrite:
        raise BackupError(f"{path} already exists; pass --force to replace it")


def _checked(conn: sqlite3.Connection, path: Path) -> int:
    """SQLite's own consistency check of a copy; its size in pages."""
    verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        raise BackupError(f"{path} failed SQLite's consistency check: {verdict}")
    return int(conn.execute("PRAGMA page_count").fetchone()[0])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
