"""Load that measures: wrk for throughput and latency, httpx for the one-at-a-time timings."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from harness.config import HISTORY_MEMBER, HOT_MEMBER, LUA_SCRIPT, MEMBER_PREFIX, Mode
from harness.seed import auth

WRK_INSTALL_HINT = (
    "wrk is not installed. It is the load generator of this benchmark; install it with\n"
    "    sudo apt-get install -y wrk        (Debian/Ubuntu)\n"
    "    brew install wrk                   (macOS)\n"
    "and run the benchmark again."
)
MARKER = "BENCH_RESULT "


def wrk_version() -> str | None:
    """wrk's version line, or None when wrk is not installed."""
    path = shutil.which("wrk")
    if path is None:
        return None
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    return " ".join((done.stdout + done.stderr).split()[:2])  # "wrk 4.1.0"


@dataclass
class LoadResult:
    """One wrk run: throughput, latency and errors, read from the Lua `done()` summary."""

    scenario: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    socket_errors: int
    expected_refusals: int  # 422 insufficient_points in `hot`: correct answers, not errors
    rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        bad = sum(n for status, n in self.statuses.items() if not status.startswith("2"))
        return bad - self.expected_refusals + self.socket_errors

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def run_wrk(url: str, key: str, scenario: str, mode: Mode, seconds: float) -> LoadResult:
    """Run wrk against `url` for `seconds` (it stops by itself) and parse its summary."""
    return run_wrk_across([url], key, scenario, mode, seconds)


def run_wrk_across(
    urls: list[str], key: str, scenario: str, mode: Mode, seconds: float
) -> LoadResult:
    """One wrk per server in `urls`, all at once, sharing the mode's connections and threads
    between them; their summaries merged (`merged`)."""
    env = {
        **os.environ,
        "BENCH_SCENARIO": scenario,
        "BENCH_KEY": key,
        "BENCH_MEMBERS": str(mode.members),
        "BENCH_PREFIX": MEMBER_PREFIX,
        "BENCH_HOT": HOT_MEMBER,
    }
    share = len(urls)
    command = [
        "wrk",
        f"-t{max(1, mode.threads // share)}",
        f"-c{mode.connections // share}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
    ]
    running = [
        subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for url in urls
    ]
    results = []
    for process in running:
        out, err = process.communicate(timeout=seconds + 60)
        lines = [ln for ln in out.decode().splitlines() if ln.startswith(MARKER)]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed ({process.returncode}): {out.decode()}{err.decode()}")
        results.append(_parse(json.loads(lines[-1][len(MARKER) :])))
    return merged(results)


def merged(results: list[LoadResult]) -> LoadResult:
    """Load generators that ran at the same time, as one: requests, throughput and answers add
    up; each latency is the largest of theirs. A percentile of the combined requests lies between
    the smallest and the largest of the generators' own, so the largest is an upper bound."""
    if len(results) == 1:
        return results[0]
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result.statuses.items():
            statuses[status] = statuses.get(status, 0) + count
    return LoadResult(
        scenario=results[0].scenario,
        requests=sum(r.requests for r in results),
        seconds=max(r.seconds for r in results),
        rps=round(sum(r.rps for r in results), 1),
        p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
        statuses=statuses,
        socket_errors=sum(r.socket_errors for r in results),
        expected_refusals=sum(r.expected_refusals for r in results),
        extra={"rps_by_generator": [r.rps for r in results]},
    )


def _parse(raw: dict[str, Any]) -> LoadResult:
    seconds = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    return LoadResult(
        scenario=raw["scenario"],
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1),
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        statuses=raw["statuses"],
        socket_errors=sum(raw["socket_errors"].values()),
        expected_refusals=raw["insufficient_points"],
    )


def time_bulk(url: str, key: str, mode: Mode) -> LoadResult:
    """One `mode.bulk_items`-award bulk request end to end, `mode.bulk_repeats` times."""
    timings, failures = [], 0
    with httpx.Client(base_url=url, headers=auth(key), timeout=120) as client:
        for round_ in range(mode.bulk_repeats):
            awards = [
                {
                    "member_id": f"{MEMBER_PREFIX}{i % mode.members}",
                    "points": 10,
                    "reason": f"bench bulk {round_}-{i}",
                }
                for i in range(mode.bulk_items)
            ]
            started = time.perf_counter()
            response = client.post("/v1/points/award/bulk", json={"awards": awards})
            timings.append(time.perf_counter() - started)
            ok = response.status_code == 200 and response.json()["data"]["failed"] == 0
            failures += 0 if ok else 1
    return _timed("bulk", timings, failures, items=mode.bulk_items)


def time_history(url: str, key: str, mode: Mode) -> list[LoadResult]:
    """GET page 1 and the last page (per_page 100) of the history member, one at a time."""
    path = f"/v1/members/{HISTORY_MEMBER}/transactions"
    last_page = -(-mode.history_rows // 100)
    results = []
    with httpx.Client(base_url=url, headers=auth(key), timeout=60) as client:
        for name, page in (("history p1", 1), ("history last", last_page)):
            params = {"page": page, "per_page": 100}
            client.get(path, params=params)  # warms the caches; not measured
            timings, failures = [], 0
            for _ in range(mode.history_repeats):
                started = time.perf_counter()
                response = client.get(path, params=params)
                timings.append(time.perf_counter() - started)
                failures += 0 if response.status_code == 200 and response.json()["data"] else 1
            results.append(_timed(name, timings, failures, page=page))
    return results


def _timed(name: str, timings: list[float], failures: int, **extra: Any) -> LoadResult:
    """Sequential timings as a LoadResult: p50 is the median, p99 the slowest."""
    return LoadResult(
        scenario=name,
        requests=len(timings),
        seconds=round(sum(timings), 3),
        rps=round(len(timings) / sum(timings), 1),
        p50_ms=round(statistics.median(timings) * 1000, 2),
        p99_ms=round(max(timings) * 1000, 2),
        max_ms=round(max(timings) * 1000, 2),
        statuses={"200": len(timings) - failures, "error": failures},
        socket_errors=0,
        expected_refusals=0,
        extra={**extra, "timings_ms": [round(t * 1000, 2) for t in timings]},
    )
