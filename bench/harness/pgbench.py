"""The database's own references, measured by pgbench straight against PostgreSQL (no HTTP, no
Python): Tally's award statements replayed on Tally's database (`refs/award.pgbench`, the raw
reference) and pgledger's transfer, the peer (`refs/transfer.pgbench`). Both use as many clients
as one `tally serve` process has connections, and the seconds of a wrk scenario.

pgledger's SQL is not part of this repository: the user downloads it and passes its path.
"""

from __future__ import annotations

import math
import re
import resource
import shutil
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import psycopg

from harness.config import BENCH_DIR, MEMBER_PREFIX, POOL_SIZE, Mode
from harness.databases import Database, new_postgres_database
from harness.load import LoadResult
from harness.procs import (
    database_cpu_seconds,
    record_database_cpu,
    settled_backends_of,
    wait_for_backends,
)

AWARD_SCRIPT = BENCH_DIR / "refs" / "award.pgbench"
TRANSFER_SCRIPT = BENCH_DIR / "refs" / "transfer.pgbench"
ULID_SQL = BENCH_DIR / "refs" / "pgledger_ulid.sql"
RAW = "raw award"
RAW_UNPREPARED = "raw award unprepared"
PGLEDGER = "pgledger transfer"
PGLEDGER_ENV = "BENCH_PGLEDGER"
PGLEDGER_HINT = (
    "pgledger was not measured. It is not part of this repository: download pgledger.sql from "
    "https://github.com/pgr0ss/pgledger and pass --pgledger PATH (or set BENCH_PGLEDGER=PATH)"
)
PGBENCH_HINT = (
    "pgbench is not installed, so the raw reference and pgledger were not measured "
    "(it comes with PostgreSQL's client programs: apt-get install postgresql-client)"
)


def pgbench_path() -> str | None:
    return shutil.which("pgbench")


def raw_awards(db: Database, mode: Mode) -> list[LoadResult]:
    """Tally's award statements, replayed on Tally's own database and members after its load:
    prepared (the database's best for them: the raw reference), then unprepared, as a client
    must send them through PgBouncer 1.18 in transaction mode (each parsed and planned again)."""
    with psycopg.connect(db.url) as conn:
        program, key_id = conn.execute(  # type: ignore[misc]
            "SELECT p.id, k.id FROM programs p JOIN api_keys k ON k.program_id = p.id "
            "WHERE p.name = 'bench' ORDER BY k.created_at LIMIT 1"
        ).fetchone()
    variables = {
        "program": program,
        "members": mode.members,
        "prefix": MEMBER_PREFIX,
        "key_id": key_id,
    }
    return [
        _measure(db.url, AWARD_SCRIPT, RAW, mode, variables),
        _measure(db.url, AWARD_SCRIPT, RAW_UNPREPARED, mode, variables, protocol="extended"),
    ]


def pgledger_transfer(admin_url: str, sql: Path, mode: Mode) -> LoadResult:
    """pgledger's transfer between two of `mode.members` accounts, in a database of its own."""
    with new_postgres_database(admin_url, "bench_pgledger") as url:
        provided = _load_pgledger(url, sql)
        with psycopg.connect(url, autocommit=True) as conn:
            # Accounts made through pgledger's own function; their ids are ULIDs, so the script
            # finds them by number in a table of ours.
            conn.execute(
                "CREATE TABLE bench_accounts AS SELECT n, (SELECT id FROM "
                "pgledger_create_account('bench ' || n, 'USD')) AS id "
                f"FROM generate_series(0, {int(mode.members) - 1}) AS n"
            )
            conn.execute("ALTER TABLE bench_accounts ADD PRIMARY KEY (n)")
            conn.execute("ANALYZE")
        result = _measure(url, TRANSFER_SCRIPT, PGLEDGER, mode, {"accounts": mode.members})
    result.extra["pgledger_sql"] = str(sql)
    if provided:
        result.extra["provided"] = f"uuid_to_ulid from {ULID_SQL.relative_to(BENCH_DIR)}"
    return result


def _load_pgledger(url: str, sql: Path) -> bool:
    """Load the user's pgledger.sql; True when our `uuid_to_ulid` had to go first.

    pgledger.sql calls `uuid_to_ulid`, which pgledger loads from a library it vendors (some
    versions of the file include it). Without it the file fails to load, and the bench provides
    its own (`refs/pgledger_ulid.sql`)."""
    text = sql.read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            with conn.transaction():
                conn.execute(text.encode())  # no parameters: the whole file as one script
            return False
        except psycopg.errors.UndefinedFunction as error:
            if "uuid_to_ulid" not in str(error):
                raise
        with conn.transaction():
            conn.execute(ULID_SQL.read_bytes())
            conn.execute(text.encode())
    return True


def _measure(
    url: str,
    script: Path,
    name: str,
    mode: Mode,
    variables: dict[str, object],
    *,
    protocol: str = "prepared",
) -> LoadResult:
    """Warm up (full run only), then one measured pgbench run of `script`. `protocol`: pgbench's
    `prepared` (each statement parsed and planned once per connection) or `extended` (every
    time, as with psycopg's `prepare_threshold=None`)."""
    pgbench = partial(
        _pgbench, url, script, variables=variables, protocol=protocol, threads=mode.threads
    )
    # The backends already there (a `tally serve`'s pool) stay; pgbench's come and go.
    database_name = url.rsplit("/", 1)[1]
    resident = settled_backends_of(database_name)
    if mode.warmup:
        pgbench(mode.warmup, log_prefix=None)
    with tempfile.TemporaryDirectory(prefix="tally-bench-pgbench-") as logs:
        wait_for_backends(database_name, at_most=resident)  # the warm-up's have ended
        client, database = _children_cpu_seconds(), database_cpu_seconds()
        out = pgbench(mode.seconds, log_prefix=Path(logs) / "tx")
        wait_for_backends(database_name, at_most=resident)
        database = database_cpu_seconds() - database
        client = _children_cpu_seconds() - client
        latencies, failed = _read_logs(Path(logs))
    result = _result(name, script, out, latencies, failed)
    result.extra["protocol"] = protocol
    # What each transaction cost pgbench and PostgreSQL: beside Tally's server and PostgreSQL
    # per award, the CPU budget of an award on these cores (bench/README.md).
    result.extra["client_cpu_ms_per_request"] = round(client * 1000 / max(1, result.requests), 3)
    result.extra["client_cpu_share"] = round(client / max(result.seconds, 1e-9), 2)
    record_database_cpu(result, database)
    return result


def _children_cpu_seconds() -> float:
    """CPU time (user and system) of this process's children that have ended (pgbench)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _pgbench(
    url: str,
    script: Path,
    seconds: float,
    *,
    variables: dict[str, object],
    protocol: str,
    threads: int,
    log_prefix: Path | None,
) -> str:
    """One pgbench run; its standard output."""
    command = [
        "pgbench",
        "--no-vacuum",
        f"--protocol={protocol}",
        f"--client={POOL_SIZE}",
        f"--jobs={min(threads, POOL_SIZE)}",
        f"--time={max(1, round(seconds))}",
        f"--file={script}",
        *(f"--define={name}={value}" for name, value in variables.items()),
    ]
    if log_prefix is not None:
        command += ["--log", f"--log-prefix={log_prefix}"]
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=seconds + 120, cwd=BENCH_DIR
    )
    if done.returncode != 0:
        said = done.stderr[-2000:]
        raise RuntimeError(f"pgbench {script.name} failed ({done.returncode}): {said}")
    return done.stdout


def _read_logs(folder: Path) -> tuple[list[int], int]:
    """Each transaction's latency (µs) from pgbench's per-transaction logs, and how many failed.

    A line is `client transaction time script epoch µs`; `time` is the latency, or `failed`."""
    latencies, failed = [], 0
    for log in folder.iterdir():
        for line in log.read_text().splitlines():
            took = line.split()[2]
            if took.isdigit():
                latencies.append(int(took))
            else:
                failed += 1
    return sorted(latencies), failed


def _result(name: str, script: Path, out: str, latencies: list[int], failed: int) -> LoadResult:
    tps = float(_field(out, r"^tps = ([\d.]+)"))
    done = int(_field(out, r"^number of transactions actually processed: (\d+)"))

    def percentile(share: float) -> float:
        at = min(len(latencies) - 1, max(0, math.ceil(share * len(latencies)) - 1))
        return latencies[at] / 1000 if latencies else 0.0

    return LoadResult(
        scenario=name,
        requests=done,
        seconds=round(done / tps, 3) if tps else 0.0,
        rps=round(tps, 1),
        p50_ms=percentile(0.50),
        p99_ms=percentile(0.99),
        max_ms=latencies[-1] / 1000 if latencies else 0.0,
        statuses={"200": done, "error": failed},  # committed, failed transactions
        socket_errors=0,
        expected_refusals=0,
        extra={"tool": "pgbench", "clients": POOL_SIZE, "script": script.name},
    )


def _field(out: str, pattern: str) -> str:
    found = re.search(pattern, out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"pgbench printed no {pattern!r}: {out[-1000:]}")
    return found.group(1)
