"""CSV import and export, timed through the real command line, on SQLite (and PostgreSQL).

    .venv/bin/python bench/csv_io.py [--rows 100000] [--members 10000] [--export-rows 1000000]
                                     [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

For each backend, on a fresh database: `tally import awards` of a file of `--rows` rows over
`--members` members (the target: 100,000 rows in under 30 s on SQLite), the same file again
(every row replayed), `tally export transactions` of those rows, then of `--export-rows` more
awards written straight into the database, each export's peak RSS measured (`wait4`): flat
memory means the two peaks are about equal though one export has ten times the rows.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tally.domain import Profile
from tally.ids import new_id
from tally.storage import open_store

TALLY = str(Path(sys.executable).with_name("tally"))
NEVER = 2**63 - 1


@dataclass(frozen=True)
class Measured:
    seconds: float  # wall clock
    cpu: float  # user + system seconds of the process: what it cost, however busy the machine
    rss: float  # peak resident set, MiB

    def __str__(self) -> str:
        return f"{self.seconds:.1f} s (CPU {self.cpu:.1f} s, peak RSS {self.rss:.0f} MiB)"


def run(args: list[str], url: str, *, out: Path | None = None) -> Measured:
    """Run `tally ARGS`, measuring that process alone."""
    env = {**os.environ, "TALLY_DATABASE_URL": url}
    started = time.perf_counter()
    with open(out or os.devnull, "w") as sink:
        child = subprocess.Popen([TALLY, *args], env=env, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"tally {' '.join(args)} failed: {child.stderr.read().decode()}")  # type: ignore[union-attr]
    return Measured(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def awards_file(path: Path, rows: int, members: int) -> None:
    with path.open("w") as f:
        f.write("member_id,points,reason,reference,expires_at\n")
        for i in range(rows):
            expiry = "2099-12-31T00:00:00Z" if i % 3 == 0 else ""
            f.write(f"m{i % members},{1 + i % 50},Import bench row {i},INV-{i},{expiry}\n")


def enrol(url: str, program: str, members: int) -> None:
    store = open_store(url)
    now = datetime.now(UTC)
    try:
        store.transact(
            lambda tx: [
                tx.members.insert(
                    tx.programs.ensure(program, now=now).id, Profile(f"m{i}"), now=now
                )
                for i in range(members)
            ]
        )
    finally:
        store.close()
    if url.startswith("postgresql"):
        # As the benchmark harness does after seeding: a database in use has its statistics.
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("ANALYZE")


def seed_entries(url: str, rows: int) -> None:
    """`rows` more posted awards to member m0, straight into the database (no lots: exports
    read entries only; `tally verify` is not run on this database)."""
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    sql = (
        "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
        "balance_after, created_at, effective_at) VALUES (?, ?, ?, ?, 'award', 'posted', 10, "
        "?, 0, ?, ?)"
    )

    def values(program_id: int, pk: int, first: int) -> Iterator[tuple[object, ...]]:
        for n in range(rows):
            yield (new_id("txn_"), program_id, pk, first + n, f"seed {n}", now, now)

    find = "SELECT pk, program_id, last_seq FROM members WHERE member_id = 'm0'"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        pk, program_id, last = conn.execute(find).fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, values(program_id, pk, last + 1_000_000))
        conn.execute("COMMIT")
        conn.close()
        return
    with psycopg.connect(url) as pg:
        pk, program_id, last = pg.execute(find).fetchone()  # type: ignore[misc]
        columns = "id, program_id, member_pk, seq, reason, created_at, effective_at"
        with pg.cursor().copy(
            f"COPY entries ({columns}, type, status, points, balance_after) FROM STDIN"
        ) as copy:
            for row in values(program_id, pk, last + 1_000_000):
                copy.write_row((*row, "award", "posted", 10, 0))
        pg.commit()
        pg.execute("ANALYZE entries")


@contextmanager
def database(backend: str, admin_url: str | None, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder}/bench.db"
        return
    assert admin_url is not None
    name = f"tally_csv_bench_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as pg:
        pg.execute(f"CREATE DATABASE {name}")
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as pg:
            pg.execute(f"DROP DATABASE {name} WITH (FORCE)")


def bench(backend: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, database(backend, args.postgres, Path(tmp)) as url:
        folder = Path(tmp)
        run(["migrate"], url)
        enrol(url, "bench", args.members)
        awards = folder / "awards.csv"
        awards_file(awards, args.rows, args.members)
        imported = run(["import", "awards", str(awards), "--program", "bench"], url)
        replayed = run(["import", "awards", str(awards), "--program", "bench"], url)
        out = folder / "out.csv"
        export = ["export", "transactions", "--program", "bench", "--output", str(out)]
        exported = run(export, url)
        small_rows = sum(1 for _ in out.open()) - 1
        seed_entries(url, args.export_rows)
        exported_big = run(export, url)
        big_rows = sum(1 for _ in out.open()) - 1
    load = os.getloadavg()[0]
    print(f"{backend} (load average {load:.1f} on {os.cpu_count()} cores):")
    print(
        f"  import {args.rows:,} rows over {args.members:,} members: {imported}, "
        f"{args.rows / imported.seconds:,.0f} rows/s"
    )
    print(f"  the same file again (every row replayed): {replayed}")
    print(f"  export {small_rows:,} rows: {exported}")
    print(
        f"  export {big_rows:,} rows: {exported_big}, {big_rows / exported_big.seconds:,.0f} rows/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="an admin URL: a database is created and dropped")
    args = parser.parse_args()
    bench("sqlite", args)
    if args.postgres:
        bench("postgres", args)


if __name__ == "__main__":
    main()
