"""What the command line runs directly on a store: keys, first run, verification, sweeping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from tally import ids
from tally.commands import Clock, CreatedKey, SweepReport
from tally.domain import (
    EntryType,
    Program,
    Scope,
)
from tally.keys import NewKey, generate_key
from tally.ports import LedgerCheck, Store, Tx
from tally.service import Ledger, system_clock

T = TypeVar("T")


def create_key(store: Store, *, program: str, scope: Scope, now: datetime) -> CreatedKey:
    new = generate_key()
    key_id = ids.new_id("key_", now)

    def work(tx: Tx) -> CreatedKey:
        found = tx.programs.ensure(program, now=now)
        return _insert_key(tx, found, scope, new, key_id=key_id, now=now)

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
}


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
        # Awards count up by their points; spends by their size; a refund takes a redemption back.
        counters[_COUNTER_OF[EntryType(kind)]] += points if kind == EntryType.AWARD else -points
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
    if check.open_lot_total != stored.balance:
        found.append(
            Mismatch(name, f"open lots hold {check.open_lot_total}, balance is {stored.balance}")
        )
    if stored.balance < 0:
        found.append(Mismatch(name, f"balance is negative: {stored.balance}"))
    return found


def verify(store: Store) -> list[Mismatch]:
    """Recompute every counter from the ledger rows; every difference found, or []."""

    def work(tx: Tx) -> list[Mismatch]:
        found = [problem for check in tx.audit.ledger_checks() for problem in _recount(check)]
        for entry_id, should, drawn in tx.audit.unbalanced_spends():
            found.append(Mismatch(entry_id, f"accounts for {should} points, its draws for {drawn}"))
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


def sweep_now(store: Store, *, clock: Clock = system_clock) -> SweepReport:
    """`tally sweep`: apply everything due, then drop expired idempotency replies."""
    return run_async(store, Ledger(store, clock=clock).lifecycle.sweep)
