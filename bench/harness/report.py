"""The one table, the targets of the issue, and the JSON file a run leaves behind."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import ROOT
from harness.load import LoadResult
from harness.pgbench import PGLEDGER, RAW, RAW_UNPREPARED

MEMORY_LIMIT_MB = 200.0
PACKAGES = (
    "tally",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "msgspec",
    "psycopg",
    "aiohttp",
    "httpx",
)


@dataclass
class BackendRun:
    """Everything measured on one backend."""

    backend: str
    version: str
    results: list[LoadResult]
    final_rss_mb: dict[int, float]  # pid → MiB, after the run
    setup_seconds: dict[str, float]
    verified: bool | None  # `tally verify` passed; None when it was not run

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "results": [r.as_json() for r in self.results],
            "final_rss_mb_by_pid": self.final_rss_mb,
            "setup_seconds": self.setup_seconds,
            "verified": self.verified,
        }

    def get(self, scenario: str) -> LoadResult | None:
        return next((r for r in self.results if r.scenario == scenario), None)


@dataclass(frozen=True)
class Check:
    """One target of the issue and whether this run met it."""

    backend: str
    target: str
    measured: str
    met: bool


# Targets of the issues, on a 2-core machine: (award/s, award p99 ms, hot/s, balance/s, bulk s).
_GOALS = {
    "sqlite": {"award": 6000, "award_p99": 25, "hot": 2000, "balance": 10000, "bulk": 1.0},
    "postgresql": {"award": 4000, "award_p99": 40, "hot": 1500, "balance": 6000, "bulk": 2.0},
}
# PostgreSQL's award against the database references measured in the same run (issue 15).
_OF_RAW = 0.6
_OF_PGLEDGER = 1.2


def _at_least(backend: str, name: str, got: float, want: float, unit: str) -> Check:
    return Check(backend, f"{name} >= {want:,.0f}{unit}", f"{got:,.0f}{unit}", got >= want)


def _at_most(backend: str, name: str, got: float, want: float, unit: str) -> Check:
    return Check(backend, f"{name} <= {want:g} {unit}", f"{got:,.2f} {unit}", got <= want)


def check_targets(run: BackendRun, ceiling: LoadResult | None) -> list[Check]:
    """The issue's targets for `run.backend`, each with what was measured."""
    goal, b, checks = _GOALS[run.backend], run.backend, []
    if award := run.get("award"):
        checks.append(_at_least(b, "award", award.rps, goal["award"], "/s"))
        checks.append(_at_most(b, "award p99", award.p99_ms, goal["award_p99"], "ms"))
        if b == "sqlite" and ceiling is not None:
            share = award.rps / ceiling.rps
            checks.append(Check(b, "award >= 25% of ceiling", f"{share:.1%}", share >= 0.25))
        if raw := run.get(RAW):
            share = award.rps / raw.rps
            target = f"award >= {_OF_RAW} x raw reference"
            checks.append(Check(b, target, f"{share:.2f}", share >= _OF_RAW))
        if peer := run.get(PGLEDGER):
            share = award.rps / peer.rps
            target = f"award >= {_OF_PGLEDGER} x pgledger"
            checks.append(Check(b, target, f"{share:.2f}", share >= _OF_PGLEDGER))
    if hot := run.get("hot"):
        checks.append(_at_least(b, "hot", hot.rps, goal["hot"], "/s"))
        if b == "sqlite":
            checks.append(Check(b, "hot: zero errors", str(hot.errors), hot.errors == 0))
    if balance := run.get("balance"):
        checks.append(_at_least(b, "balance", balance.rps, goal["balance"], "/s"))
    if bulk := run.get("bulk"):
        checks.append(_at_most(b, "bulk 10,000 (median)", bulk.p50_ms / 1000, goal["bulk"], "s"))
    if (hooked := run.get("award webhooks")) and (award := run.get("award")):
        share = hooked.rps / award.rps
        checks.append(Check(b, "award, webhooks on >= 80% of off", f"{share:.0%}", share >= 0.8))
    if delivered := next((r for r in run.results if r.scenario.startswith("deliver ")), None):
        seconds = delivered.p50_ms / 1000
        checks.append(_at_most(b, delivered.scenario + " deliveries", seconds, 60, "s"))
    if first := run.get("history p1"):
        checks.append(_at_most(b, "history page 1 (median)", first.p50_ms, 10, "ms"))
    if last := run.get("history last"):
        checks.append(_at_most(b, "history last page (median)", last.p50_ms, 50, "ms"))
    if run.final_rss_mb:
        top = max(run.final_rss_mb.values())
        checks.append(_at_most(b, "RSS per server process", top, MEMORY_LIMIT_MB, "MiB"))
    return checks


def _ratio(value: float, reference: LoadResult | None) -> str:
    return "-" if reference is None or not reference.rps else f"{value / reference.rps:.2f}"


def comparisons(run: BackendRun) -> list[str]:
    """The PostgreSQL-only scenarios against their counterparts of the same run."""
    pairs = [
        ("award", RAW, "the raw reference (Tally's award statements, pgbench)"),
        ("award", PGLEDGER, "pgledger's transfer (pgbench)"),
        (RAW_UNPREPARED, RAW, "the raw reference (the same statements prepared)"),
        ("award 2srv", "award", "award on one server"),
        ("award pgbouncer", "award", "award without PgBouncer"),
        ("balance pgbouncer", "balance", "balance without PgBouncer"),
    ]
    lines = []
    for name, reference_name, what in pairs:
        result, reference = run.get(name), run.get(reference_name)
        if result is not None and reference is not None and reference.rps:
            share = result.rps / reference.rps
            lines.append(f"{run.backend} {name}: {share:.2f} x {what}")
    return lines


def _row(backend: str, r: LoadResult, refs: list[LoadResult | None]) -> str:
    """One table row; bulk shows awards/s, and its p50/p99 are the median/max request time.

    `refs`: the floor, the ceiling, the raw reference and pgledger. The database references are
    not HTTP, so they are compared with awards (and each other) only; history and deliveries
    are one request at a time, so with nothing."""
    rps = r.rps
    if r.scenario == "bulk" or r.scenario.startswith("deliver "):
        rps = r.extra["items"] / (r.p50_ms / 1000)
    database_ref = r.scenario in (RAW, RAW_UNPREPARED, PGLEDGER)
    http_rate = not database_ref and not r.scenario.startswith(("history", "deliver"))
    awards = database_ref or r.scenario.startswith("award")
    shown = [http_rate, http_rate, awards, awards]
    ratios = [_ratio(rps, ref) if show else "-" for ref, show in zip(refs, shown, strict=True)]
    cells = [
        backend,
        r.scenario,
        f"{rps:,.0f}",
        f"{r.p50_ms:.2f}",
        f"{r.p99_ms:.2f}",
        str(r.errors),
        f"{r.rss_mb:.0f}" if r.rss_mb else "-",
        *ratios,
    ]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = (
    "| backend | scenario | req/s | p50 ms | p99 ms | errors | RSS MiB | x floor | x ceiling "
    "| x raw | x pgledger |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def table(runs: list[BackendRun], floor: LoadResult | None, ceiling: LoadResult | None) -> str:
    """The one table of the issue, as Markdown (it reads well in a terminal too)."""
    rows = [TABLE_HEAD]
    for ref in (floor, ceiling):
        if ref is not None:
            rows.append(_row("reference", ref, [floor, ceiling, None, None]))
    for run in runs:
        refs = [floor, ceiling, run.get(RAW), run.get(PGLEDGER)]
        rows.extend(_row(run.backend, r, refs) for r in run.results)
    return "\n".join(rows)


def targets_table(checks: list[Check]) -> str:
    rows = ["| backend | target | measured | met |", "| --- | --- | ---: | --- |"]
    for c in checks:
        rows.append(f"| {c.backend} | {c.target} | {c.measured} | {'yes' if c.met else '**NO**'} |")
    return "\n".join(rows)


def machine() -> dict[str, Any]:
    """What the figures depend on: CPUs, OS and every version in the request path."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        model = lines[0].split(":", 1)[1].strip() if lines else ""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def source_revision() -> str:
    """Tally's git commit, `+dirty` when src/ has uncommitted changes ("unknown" outside git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+dirty" if dirty else "")


def versions(extra: dict[str, str]) -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return {**found, **extra}


def write_json(folder: Path, mode: str, payload: dict[str, Any]) -> Path:
    """bench/results/<UTC timestamp>-<mode>.json."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stamp}-{mode}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
