"""Benchmark Tally end to end: `make bench` (full, for people) or `make bench-smoke` (CI).

Starts `tally serve` on a fresh SQLite file and a fresh PostgreSQL database, loads it with wrk,
measures two reference endpoints on the same machine, prints one table and writes
bench/results/<timestamp>-<mode>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import seed
from harness import webhooks as hooks
from harness.config import FULL, LOAD_SCENARIOS, RESULTS_DIR, SMOKE, Mode
from harness.databases import (
    DEFAULT_PG_ADMIN_URL,
    Database,
    fresh_postgres,
    fresh_sqlite,
    postgres_reachable,
    verify,
)
from harness.load import (
    WRK_INSTALL_HINT,
    LoadResult,
    run_wrk,
    run_wrk_across,
    time_bulk,
    time_history,
    wrk_version,
)
from harness.pgbench import (
    PGBENCH_HINT,
    PGLEDGER_ENV,
    PGLEDGER_HINT,
    pgbench_path,
    pgledger_transfer,
    raw_awards,
)
from harness.pooler import PGBOUNCER_HINT, pgbouncer, pgbouncer_path
from harness.procs import (
    Server,
    database_cpu_seconds,
    record_database_cpu,
    reference_server,
    tally_server,
)
from harness.profile import Profiler
from harness.report import (
    BackendRun,
    check_targets,
    comparisons,
    machine,
    source_revision,
    table,
    targets_table,
    versions,
)
from harness.report import write_json as write_results

ALL_SCENARIOS = (*LOAD_SCENARIOS, "scaleout", "pgbouncer", "bulk", "webhooks", "history", "past")
BUSY_LOAD = 1.5  # the load average right after a run of ours alone stays below this


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke", action="store_true", help="~30 s run for CI; never fails on targets"
    )
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="comma-separated")
    parser.add_argument("--seconds", type=float, help="measured seconds per wrk scenario")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default 1)")
    parser.add_argument("--pg-url", default=DEFAULT_PG_ADMIN_URL, help="PostgreSQL admin URL")
    parser.add_argument("--no-refs", action="store_true", help="skip the references")
    parser.add_argument(
        "--pgledger",
        type=Path,
        default=os.environ.get(PGLEDGER_ENV) or None,
        help=f"pgledger.sql to measure as the peer (default ${PGLEDGER_ENV})",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip `tally verify` after")
    parser.add_argument("--history-load", choices=("sql", "http"), help="how to seed history")
    parser.add_argument("--profile", type=Path, help="py-spy award and balance into this folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.pgledger is not None and not args.pgledger.is_file():
        parser.error(f"--pgledger {args.pgledger}: no such file")
    return args


def choose_mode(args: argparse.Namespace) -> Mode:
    mode = SMOKE if args.smoke else FULL
    if args.seconds:
        mode = replace(mode, seconds=args.seconds)
    if args.history_load:
        mode = replace(mode, history_load=args.history_load)
    return mode


class Bench:
    """One run: the references, then every chosen backend, in sequence (never concurrently)."""

    def __init__(self, args: argparse.Namespace, mode: Mode, log_dir: Path) -> None:
        self.args = args
        self.mode = mode
        self.log_dir = log_dir
        self.scenarios = [s for s in args.scenarios.split(",") if s]
        self.profiler = Profiler(args.profile) if args.profile else None
        self.notes: list[str] = []

    def say(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # references

    def references(self) -> dict[str, LoadResult]:
        """The floor (minimal Starlette) and ceiling (raw ASGI), same load as `award`."""
        found = {}
        for name in ("floor", "ceiling"):
            with reference_server(
                f"refs.{name}", workers=self.args.workers, log_dir=self.log_dir
            ) as server:
                result = self.wrk([server], "", "ref")
                found[name] = replace(result, scenario=name)
                self.say(f"reference {name}: {result.rps:,.0f}/s")
        return found

    def wrk(
        self, servers: list[Server], key: str, scenario: str, *, postgres: bool = False
    ) -> LoadResult:
        """Warm up (full run only), then measure; RSS is read right after the load stops. With
        several servers, the load is split between them (`run_wrk_across`). `postgres`: the
        servers use this machine's PostgreSQL, whose CPU per request is measured too."""
        urls = [server.url for server in servers]
        if self.mode.warmup:
            run_wrk_across(urls, key, scenario, self.mode, self.mode.warmup)
        result = self.measured_wrk(servers, key, scenario, postgres=postgres)
        result.rss_mb = round(max(server.rss_mb() for server in servers), 1)
        for server in servers:
            if not server.alive():
                raise RuntimeError(f"{server.name} died during {scenario}; see {server.log}")
        return result

    def measured_wrk(
        self, servers: list[Server], key: str, scenario: str, *, postgres: bool = False
    ) -> LoadResult:
        """One measured wrk run, with the servers' CPU time per request they answered (what the
        webhooks ratio is made of: what a request costs the server with and without
        deliveries, on the same cores), and PostgreSQL's when `postgres`."""
        cpu = sum(server.cpu_seconds() for server in servers)
        database = database_cpu_seconds() if postgres else 0.0
        result = run_wrk_across(
            [server.url for server in servers], key, scenario, self.mode, self.mode.seconds
        )
        used = sum(server.cpu_seconds() for server in servers) - cpu
        result.extra["server_cpu_ms_per_request"] = round(used * 1000 / max(1, result.requests), 3)
        result.extra["server_cpu_share"] = round(used / result.seconds, 2)  # cores kept busy
        if postgres:
            record_database_cpu(result, database_cpu_seconds() - database)
        return result

    # backends

    def databases(self) -> Iterator[tuple[str, Callable[[], AbstractContextManager[Database]]]]:
        for backend in self.args.backends.split(","):
            if backend == "sqlite":
                yield backend, fresh_sqlite
            elif backend in ("postgresql", "postgres"):
                if postgres_reachable(self.args.pg_url):
                    yield "postgresql", lambda: fresh_postgres(self.args.pg_url)
                elif self.mode.name == "smoke":
                    self.notes.append(f"PostgreSQL at {self.args.pg_url} unreachable: skipped")
                else:
                    raise RuntimeError(f"PostgreSQL at {self.args.pg_url} is unreachable")
            else:
                raise ValueError(f"unknown backend {backend!r}")

    def backend(self, db: Database) -> BackendRun:
        """Seed, run every chosen scenario against one `tally serve`, then verify the ledger.

        The long history is made only after the other scenarios, so that each of them measures
        the data it names; `tally verify` runs before it (see "Order" in bench/README.md).
        """
        self.say(f"{db.backend}: fresh database ready ({db.url})")
        setup: dict[str, float] = {}
        with tally_server(db.url, workers=self.args.workers, log_dir=self.log_dir) as server:
            setup["members"] = round(seed.create_members(server.url, db.key, self.mode.members), 2)
            seed.fund_hot_member(server.url, db.key)
            self.say(f"{db.backend}: {self.mode.members:,} members in {setup['members']} s")
            results = self.load_scenarios(server, db)
            if db.backend == "postgresql" and "pgbouncer" in self.scenarios:
                results += self.behind_pgbouncer(db)
            if "bulk" in self.scenarios:
                results.append(self.measured(server, time_bulk(server.url, db.key, self.mode)))
            if "webhooks" in self.scenarios:
                results += self.webhooks(server, db)
            verified = self.verify(db, setup, "after the load")
            if "history" in self.scenarios:
                setup["history_" + self.mode.history_load] = self.seed_history(server, db)
                for result in time_history(server.url, db.key, self.mode):
                    results.append(self.measured(server, result))
                if self.mode.verify_history:
                    verified = self.verify(db, setup, "after the history") if verified else verified
            final = {pid: round(mb, 1) for pid, mb in server.rss_by_pid().items()}
        return BackendRun(db.backend, db.version, results, final, setup, verified)

    def verify(self, db: Database, setup: dict[str, float], when: str) -> bool | None:
        """`tally verify` (None when skipped or cut off); its time goes into `setup`."""
        if self.args.no_verify:
            return None
        started = time.perf_counter()
        verified, said = verify(db.url, self.mode.verify_timeout)
        setup[f"verify {when}"] = round(time.perf_counter() - started, 2)
        self.say(f"{db.backend} {when}: {said}")
        if verified is not True:
            self.notes.append(f"{db.backend} {when}: {said}")
        return verified

    def seed_history(self, server: Server, db: Database) -> float:
        """The history member's rows, straight into the database or as bulk requests; seconds."""
        mode = self.mode
        if mode.history_load == "sql":
            took = seed.load_history_sql(db.backend, db.url, mode.history_rows)
        else:
            took = seed.load_history_http(server.url, db.key, mode.history_rows, mode.bulk_items)
        self.say(
            f"{db.backend}: {mode.history_rows:,} history rows via {mode.history_load}"
            f" in {took:.1f} s"
        )
        return round(took, 2)

    def load_scenarios(self, server: Server, db: Database) -> list[LoadResult]:
        results = []
        for scenario in (s for s in LOAD_SCENARIOS if s in self.scenarios):
            with self.profiling(server, db.backend, scenario):
                result = self.wrk([server], db.key, scenario, postgres=db.backend == "postgresql")
            results.append(self.logged(db.backend, result))
            if scenario == "award" and db.backend == "postgresql":
                results += self.beside_award(server, db)
        return results

    def logged(self, backend: str, result: LoadResult) -> LoadResult:
        """`result`, said on the log as it comes (the servers' CPU when they were measured)."""
        cost = f", {note}" if (note := cpu_note(result)) else ""
        memory = f", {result.rss_mb:.0f} MiB" if result.rss_mb else ""
        self.say(
            f"{backend} {result.scenario}: {result.rps:,.0f}/s, p99 {result.p99_ms:.1f} ms, "
            f"{result.errors} errors{memory}{cost}"
        )
        return result

    def beside_award(self, server: Server, db: Database) -> list[LoadResult]:
        """What PostgreSQL's `award` is compared with: the database's own references (pgbench)
        and two servers on the database. Measured right after it, so that the machine, shared
        and drifting, is as alike as it gets for the ratios."""
        results = [] if self.args.no_refs else self.database_references(db)
        if "scaleout" in self.scenarios:
            results.append(self.scale_out(server, db))
        return results

    def database_references(self, db: Database) -> list[LoadResult]:
        """Tally's award statements replayed by pgbench on this database (the raw reference,
        and the same unprepared), and pgledger's transfer in a database of its own when its SQL
        was given."""
        if pgbench_path() is None:
            self.notes.append(PGBENCH_HINT)
            return []
        found = [self.logged(db.backend, raw) for raw in raw_awards(db, self.mode)]
        if self.args.pgledger is None:
            self.notes.append(PGLEDGER_HINT)
        else:
            peer = pgledger_transfer(self.args.pg_url, self.args.pgledger, self.mode)
            found.append(self.logged(db.backend, peer))
        return found

    def scale_out(self, server: Server, db: Database) -> LoadResult:
        """`award` split between this server and a second `tally serve` on the same database."""
        with tally_server(
            db.url, workers=self.args.workers, log_dir=self.log_dir, label="tally-postgresql-2"
        ) as second:
            result = self.wrk([server, second], db.key, "award", postgres=True)
        return self.logged(db.backend, replace(result, scenario="award 2srv"))

    def behind_pgbouncer(self, db: Database) -> list[LoadResult]:
        """`award` and `balance` against a `tally serve` whose database URL is PgBouncer's
        (transaction pool mode), with nothing else changed."""
        if pgbouncer_path() is None:
            self.notes.append(PGBOUNCER_HINT)
            return []
        with (
            pgbouncer(db.url, log_dir=self.log_dir) as url,
            tally_server(
                url, workers=self.args.workers, log_dir=self.log_dir, label="tally-pgbouncer"
            ) as server,
        ):
            return [
                self.logged(
                    db.backend,
                    replace(
                        self.wrk([server], db.key, scenario, postgres=True),
                        scenario=f"{scenario} pgbouncer",
                    ),
                )
                for scenario in ("award", "balance")
            ]

    def webhooks(self, server: Server, db: Database) -> list[LoadResult]:
        """`award` again with a webhook endpoint for every event (the dispatcher delivering
        meanwhile), then 10,000 deliveries end to end to a new endpoint.

        The first endpoint is deleted after its load, with the deliveries it has not made yet,
        so that they do not compete with what is measured next."""
        with reference_server("refs.receiver", workers=1, log_dir=self.log_dir) as receiver:
            endpoint = hooks.subscribe(server.url, db.key, receiver.url)
            if self.mode.warmup:
                run_wrk(server.url, db.key, "award", self.mode, self.mode.warmup)
            before = hooks.received(receiver.url)
            result = self.measured_wrk([server], db.key, "award")
            during = hooks.received(receiver.url) - before
            result = replace(result, scenario="award webhooks", rss_mb=round(server.rss_mb(), 1))
            result.extra["delivered_during_load_per_s"] = round(during / result.seconds, 1)
            hooks.unsubscribe(server.url, db.key, endpoint)
            self.say(
                f"{db.backend} award webhooks: {result.rps:,.0f}/s, p99 {result.p99_ms:.1f} ms; "
                f"{during / result.seconds:,.0f} deliveries/s made during the load, "
                f"{cpu_note(result)}"
            )
            endpoint = hooks.subscribe(server.url, db.key, receiver.url)
            delivered = hooks.time_deliveries(server.url, db.key, receiver.url, self.mode)
            hooks.unsubscribe(server.url, db.key, endpoint)
            self.say(f"{db.backend} {delivered.scenario}: {delivered.p50_ms / 1000:.1f} s")
        return [result, delivered]

    def measured(self, server: Server, result: LoadResult) -> LoadResult:
        """`result` with the server's memory right after it; logged."""
        result.rss_mb = round(server.rss_mb(), 1)
        self.say(
            f"{result.scenario}: median {result.p50_ms:.1f} ms, slowest {result.max_ms:.1f} ms"
        )
        return result

    def profiling(self, server: Server, backend: str, scenario: str) -> AbstractContextManager[Any]:
        if self.profiler is None or scenario not in ("award", "balance"):
            return _nothing()
        return self.profiler.record(server, f"{backend}-{scenario}", self.mode.seconds)


def cpu_note(result: LoadResult) -> str:
    """The CPU a request cost each process that served it: Tally's server (or pgbench, the
    client of the database references) and PostgreSQL, where they were measured."""
    parts = []
    for side, key in (("server", "server"), ("pgbench", "client"), ("PostgreSQL", "database")):
        if f"{key}_cpu_ms_per_request" in result.extra:
            cpu, share = result.extra[f"{key}_cpu_ms_per_request"], result.extra[f"{key}_cpu_share"]
            parts.append(f"{side} CPU {cpu:.3f} ms per request ({share:.2f} cores)")
    return ", ".join(parts)


def cpu_lines(runs: list[BackendRun]) -> list[str]:
    """CPU per request of each process, where measured (the table leaves it out)."""
    return [
        f"{run.backend} {r.scenario}: {note}"
        for run in runs
        for r in run.results
        if (note := cpu_note(r))
    ]


class _nothing(AbstractContextManager[None]):
    def __exit__(self, *exc: object) -> None:
        return None


def broken(runs: list[BackendRun], refs: dict[str, LoadResult]) -> list[str]:
    """Signs that the harness (not the performance) is broken: mostly failed requests."""
    problems = []
    labelled = [(f"reference {name}", r) for name, r in refs.items()]
    labelled += [(f"{run.backend} {r.scenario}", r) for run in runs for r in run.results]
    for label, result in labelled:
        if result.requests == 0 or result.errors > result.requests / 2:
            problems.append(f"{label}: {result.errors} errors in {result.requests} requests")
    problems += [f"{run.backend}: tally verify failed" for run in runs if run.verified is False]
    return problems


@dataclass
class Outcome:
    """What a run collected, before it is reported."""

    refs: dict[str, LoadResult]
    runs: list[BackendRun]
    db_versions: dict[str, str]
    failures: list[str]
    notes: list[str]


def collect(args: argparse.Namespace, mode: Mode) -> Outcome:
    """References, then each backend; a backend that breaks is reported, the others still run."""
    with tempfile.TemporaryDirectory(prefix="tally-bench-logs-") as logs:
        bench = Bench(args, mode, Path(logs))
        refs = {} if args.no_refs else bench.references()
        outcome = Outcome(refs, [], {}, [], bench.notes)
        for name, open_db in bench.databases():
            try:
                with open_db() as db:
                    outcome.runs.append(bench.backend(db))
                    outcome.db_versions[db.backend] = db.version
            except Exception as error:  # keep the other backend's figures
                bench.say(f"{name} FAILED: {error}")
                outcome.failures.append(f"{name}: {error}")
    return outcome


def busy_note(before: tuple[float, ...], after: tuple[float, ...]) -> str | None:
    """A warning when other work competed for the CPUs (figures then come out low and noisy)."""
    if max(before[0], after[0]) <= BUSY_LOAD:
        return None
    return (
        f"the machine was busy with other work (1-minute load average {before[0]:.1f} before, "
        f"{after[0]:.1f} after the run): figures are lower and noisier than on a quiet machine"
    )


def run_past(args: argparse.Namespace) -> None:
    """Balances in the past and the program report, in-process through the service, no server
    (bench/past.py): at a million ledger rows, or 20,000 in a smoke run (so it cannot rot)."""
    import past

    print("\nBalances in the past and the program report (bench/past.py):\n", flush=True)
    size = ["--rows", "20000", "--members", "200", "--samples", "30"] if args.smoke else []
    past.main(["--backends", args.backends, "--pg-admin-url", args.pg_url, *size])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.scenarios == "past":
        run_past(args)
        return 0
    wrk = wrk_version()
    if wrk is None:
        print(WRK_INSTALL_HINT, file=sys.stderr)
        return 2
    mode = choose_mode(args)
    started, load_before, revision = time.perf_counter(), os.getloadavg(), source_revision()
    outcome = collect(args, mode)
    load_after = os.getloadavg()
    if note := busy_note(load_before, load_after):
        outcome.notes.append(note)
    floor, ceiling = outcome.refs.get("floor"), outcome.refs.get("ceiling")
    checks = [c for run in outcome.runs for c in check_targets(run, ceiling)]
    print(
        f"\nTally benchmark ({mode.name}): {mode.connections} connections, "
        f"{mode.seconds:g} s per scenario, {args.workers} worker(s), {wrk}\n"
    )
    print(table(outcome.runs, floor, ceiling))
    if compared := [line for run in outcome.runs for line in comparisons(run)]:
        print("\nPostgreSQL, side by side:\n")
        print("\n".join(f"- {line}" for line in compared))
    if lines := cpu_lines(outcome.runs):
        print("\nCPU per request (user + system): every server process, pgbench, PostgreSQL:\n")
        print("\n".join(f"- {line}" for line in lines))
    print("\nTargets (2-core machine):\n")
    print(targets_table(checks))
    for note in outcome.notes:
        print(f"\nNote: {note}")
    payload = {
        "mode": mode.name,
        "command": " ".join(["bench/run.py", *argv]),
        "seconds_total": round(time.perf_counter() - started, 1),
        "settings": {**vars(mode), "workers": args.workers, "pgledger": str(args.pgledger or "")},
        "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": load_after},
        "versions": versions({"tally_git": revision, "wrk": wrk, **outcome.db_versions}),
        "references": {k: r.as_json() for k, r in outcome.refs.items()},
        "backends": {run.backend: run.as_json() for run in outcome.runs},
        "comparisons": compared,
        "targets": [vars(c) for c in checks],
        "notes": outcome.notes,
        "failures": outcome.failures,
    }
    path = write_results(args.out, mode.name, payload)
    print(f"\nResults: {path} ({payload['seconds_total']} s)")
    if "past" in args.scenarios.split(","):
        run_past(args)
    problems = outcome.failures + broken(outcome.runs, outcome.refs)
    for problem in problems:
        print(f"HARNESS PROBLEM: {problem}", file=sys.stderr)
    if problems:
        return 1
    return 1 if args.strict and not all(c.met for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
