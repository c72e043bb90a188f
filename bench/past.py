"""Balances in the past and the program report at a million ledger rows.

    .venv/bin/python bench/past.py [--backends sqlite,postgresql] [--rows 1000000]
    .venv/bin/python bench/run.py --scenarios past     (the same, with the defaults)

Per backend: a fresh database migrated up to 0004, a year of ledger rows written straight into
it (awards and deducts of `--members` members, spread evenly over the year up to now, each
deduct drawing on the oldest lots, as the service writes them), then migration 0007, which
builds the balance checkpoints of those rows (timed). Then, in-process through the service
(`Ledger`, no HTTP): `balance?as_of=` for random members at random moments, and the program
report over the last 30 days by day, the last year by week and by month; the first report also
rolls the year up into the running totals (timed on its own). Prints milliseconds (p50, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from harness.databases import DEFAULT_PG_ADMIN_URL
from yoyo import get_backend, read_migrations

from tally.rules.reports import Interval
from tally.service import Ledger
from tally.service.reports import ReportQuery
from tally.storage import open_store

NEVER = 2**63 - 1
YEAR = 365 * 86_400_000_000
Row = tuple[Any, ...]


def migrate_before(url: str, backend: str, first_missing: str) -> None:
    folder = resources.files("tally.storage") / "migrations" / backend
    older = read_migrations(str(folder)).filter(lambda m: m.id < first_missing)
    yoyo_url = url if backend == "sqlite" else "postgresql+psycopg://" + url.split("://")[1]
    conn = get_backend(yoyo_url)
    try:
        with conn.lock():
            conn.apply_migrations(conn.to_apply(older))
    finally:
        conn.connection.close()


def ledger_rows(rows: int, members: int, now: int) -> Iterator[tuple[str, Row]]:
    """("members"|"entries"|"lots"|"draws", row): a year of awards (70%) and deducts."""
    rng = random.Random(7)
    per_member = rows // members
    yield "programs", (1, "bench", now - YEAR)
    for pk in range(1, members + 1):
        lots: dict[str, int] = {}
        oldest = 0
        order: list[str] = []
        balance = earned = deducted = 0
        entries: list[Row] = []
        lot_rows: list[Row] = []
        draws: list[Row] = []
        for seq in range(1, per_member + 1):
            at = now - YEAR + (seq * YEAR) // (per_member + 1) + pk
            entry_id = f"txn_{pk}_{seq}"
            if balance < 20 or rng.random() < 0.7:
                points = rng.randint(5, 50)
                balance += points
                earned += points
                lots[entry_id] = points
                order.append(entry_id)
                expires = NEVER if seq % 2 else now + rng.randint(1, 120) * 86_400_000_000
                lot_rows.append((entry_id, pk, seq, points, expires, entry_id))
                entries.append((entry_id, 1, pk, seq, "award", points, balance, at, at, *_POSTED))
            else:
                points = rng.randint(1, balance // 2)
                balance -= points
                deducted += points
                entries.append((entry_id, 1, pk, seq, "deduct", -points, balance, at, at, *_POSTED))
                need = points
                while need:
                    lot_id = order[oldest]
                    take = min(lots[lot_id], need)
                    lots[lot_id] -= take
                    need -= take
                    draws.append((entry_id, lot_id, take))
                    if not lots[lot_id]:
                        oldest += 1
        yield (
            "members",
            (pk, 1, f"m{pk}", now - YEAR, balance, earned, deducted, per_member, per_member),
        )
        for row in entries:
            yield "entries", row
        for entry_id, pk_, seq, points, expires, source in lot_rows:
            yield "lots", (entry_id, pk_, seq, points, lots[entry_id], expires, source)
        for row in draws:
            yield "draws", row


_POSTED = ("posted", "bench")
COLUMNS = {
    "programs": "id, name, created_at",
    "members": "pk, program_id, member_id, created_at, balance, lifetime_earned, "
    "lifetime_deducted, last_seq, entry_count",
    "entries": "id, program_id, member_pk, seq, type, points, balance_after, created_at, "
    "effective_at, status, reason",
    "lots": "entry_id, member_pk, seq, points, remaining, expires_at, source_id",
    "draws": "spend_id, lot_id, points",
}


def seed(backend: str, url: str, rows: int, members: int, now: int) -> None:
    grouped: dict[str, list[Row]] = {name: [] for name in COLUMNS}
    for table, row in ledger_rows(rows, members, now):
        grouped[table].append(row)
    if backend == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for table, found in grouped.items():
                marks = ", ".join("?" * len(found[0]))
                conn.executemany(f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})", found)
        return
    with psycopg.connect(url) as conn:
        for table, found in grouped.items():
            with conn.cursor().copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                for row in found:
                    copy.write_row(row)
        conn.execute("SELECT setval(pg_get_serial_sequence('members', 'pk'), %s)", (members,))
        conn.execute("SELECT setval(pg_get_serial_sequence('programs', 'id'), 10)")
        conn.commit()
        conn.execute("ANALYZE")


def timed(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):.1f} ms, p99 {p99:.1f} ms (n={len(ordered)})"


async def measure(
    ledger: Ledger, members: int, samples: int, now: datetime
) -> list[tuple[str, str]]:
    rng = random.Random(11)
    results = []

    async def each(name: str, call: Callable[[], Awaitable[object]], n: int) -> None:
        took = []
        for _ in range(n):
            started = time.perf_counter()
            await call()
            took.append((time.perf_counter() - started) * 1000)
        results.append((name, timed(took)))

    def as_of() -> Awaitable[object]:
        member = f"m{rng.randint(1, members)}"
        moment = now - timedelta(seconds=rng.randint(0, 365 * 86_400))
        return ledger.reports.balance_as_of(1, member, moment)

    today = now.date()
    started = time.perf_counter()
    await ledger.reports.program_report(1, ReportQuery(None, None, Interval.DAY))
    first = (time.perf_counter() - started) * 1000
    results.append(("first report (rolls a year up)", f"{first:.0f} ms"))
    await each("balance as_of", as_of, samples)
    await each("balance now", lambda: ledger.points.balance(1, "m1"), samples // 3)
    last_30 = ReportQuery(today - timedelta(days=29), today, Interval.DAY)
    year = today - timedelta(days=364)
    await each("report, 30 days by day", lambda: ledger.reports.program_report(1, last_30), 50)
    by_week = ReportQuery(year, today, Interval.WEEK)
    await each("report, a year by week", lambda: ledger.reports.program_report(1, by_week), 50)
    by_month = ReportQuery(year, today, Interval.MONTH)
    await each("report, a year by month", lambda: ledger.reports.program_report(1, by_month), 50)
    return results


def run(backend: str, url: str, rows: int, members: int, samples: int) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    now_micros = int(now.timestamp()) * 1_000_000
    migrate_before(url, backend, "0005")
    started = time.perf_counter()
    seed(backend, url, rows, members, now_micros)
    print(f"{backend}: {rows:,} rows seeded in {time.perf_counter() - started:.0f} s")
    store = open_store(url)
    try:
        started = time.perf_counter()
        store.migrate()
        print(f"{backend}: migration 0007 (checkpoints) took {time.perf_counter() - started:.1f} s")
        ledger = Ledger(store, clock=lambda: datetime.now(UTC))

        async def main() -> list[tuple[str, str]]:
            try:
                return await measure(ledger, members, samples, now)
            finally:
                await store.aclose()

        for name, figure in asyncio.run(main()):
            print(f"{backend}: {name}: {figure}")
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=2_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--pg-admin-url", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args(argv)
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite:///{Path(folder) / 'past.db'}"
                run("sqlite", url, args.rows, args.members, args.samples)
            continue
        name = f"tally_past_{uuid.uuid4().hex[:8]}"
        admin = psycopg.connect(args.pg_admin_url, autocommit=True)
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = args.pg_admin_url.rsplit("/", 1)[0] + "/" + name
            run("postgres", url, args.rows, args.members, args.samples)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.close()


if __name__ == "__main__":
    main()
