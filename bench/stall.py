"""How long one 10,000-item bulk award makes everyone else wait.

One client sends a bulk award of `--items` awards spread over `--members` members while another
reads a balance in a loop on its own connection; the figures are the latency of the reads that
overlapped the bulk (p50, p99, max). A server that does the bulk's work without blocking its
event loop keeps them near an idle read's; one that does not makes each of them wait for the
whole batch.

    .venv/bin/python bench/stall.py                    # a fresh SQLite file
    .venv/bin/python bench/stall.py --backend postgresql [--pg-url URL]
    .venv/bin/python bench/stall.py --url http://127.0.0.1:8000 --key tally_...  # a server you run

`tests/test_stall.py` runs the same measurement (`measure_stall`) with a bound.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BULK_PATH = "/v1/points/award/bulk"
READER_WARMUP_READS = 20  # reads before the bulk starts, so the reader's connection is warm
TIMEOUT = 180.0


@dataclass(frozen=True)
class Stall:
    """What the reads overlapping one bulk award saw."""

    items: int
    bulk_seconds: float
    bulk_status: int
    reads: int  # balance reads that overlapped the bulk
    p50_ms: float
    p99_ms: float
    max_ms: float
    idle_p50_ms: float  # the same read before the bulk started

    def lines(self) -> list[str]:
        return [
            f"bulk award of {self.items:,} items: {self.bulk_seconds:.2f} s"
            f" (HTTP {self.bulk_status})",
            f"balance reads during it: {self.reads}, p50 {self.p50_ms:.1f} ms,"
            f" p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms"
            f" (idle p50 {self.idle_p50_ms:.1f} ms)",
        ]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def enrol(url: str, key: str, count: int, *, prefix: str = "stall") -> list[str]:
    """`count` members enrolled through the API (one keep-alive connection); their ids."""
    ids = [f"{prefix}{i}" for i in range(count)]
    with httpx.Client(base_url=url, headers=auth(key), timeout=30) as client:
        for member_id in ids:
            response = client.post("/v1/members", json={"member_id": member_id})
            if response.status_code != 201:
                raise RuntimeError(f"enrolling {member_id}: {response.status_code} {response.text}")
    return ids


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def measure_stall(url: str, key: str, members: list[str], *, items: int = 10_000) -> Stall:
    """One bulk award of `items` awards over `members` while a balance is read in a loop."""
    awards = [
        {"member_id": members[i % len(members)], "points": 1, "reason": f"stall {i}"}
        for i in range(items)
    ]
    reads: list[tuple[float, float]] = []  # (started, seconds)
    stop = threading.Event()
    failures: list[str] = []

    def read_forever() -> None:
        with httpx.Client(base_url=url, headers=auth(key), timeout=TIMEOUT) as client:
            path = f"/v1/members/{members[0]}/balance"
            while not stop.is_set():
                started = time.monotonic()
                response = client.get(path)
                reads.append((started, time.monotonic() - started))
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
                    return

    reader = threading.Thread(target=read_forever, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while len(reads) < READER_WARMUP_READS and not failures:
            if time.monotonic() > deadline or not reader.is_alive():
                raise RuntimeError("the balance reader did not get going")
            time.sleep(0.01)  # polling the reader's progress, bounded by the deadline
        idle = [seconds for _, seconds in reads]
        with httpx.Client(base_url=url, headers=auth(key), timeout=TIMEOUT) as client:
            began = time.monotonic()
            response = client.post(BULK_PATH, json={"awards": awards})
            ended = time.monotonic()
    finally:
        stop.set()
        reader.join(timeout=TIMEOUT)
    if failures:
        raise RuntimeError(f"a balance read failed: {failures[0]}")
    during = [s for started, s in reads if started < ended and started + s > began]
    if not during:
        raise RuntimeError("no balance read overlapped the bulk award")
    return Stall(
        items=items,
        bulk_seconds=ended - began,
        bulk_status=response.status_code,
        reads=len(during),
        p50_ms=statistics.median(during) * 1000,
        p99_ms=percentile(during, 0.99) * 1000,
        max_ms=max(during) * 1000,
        idle_p50_ms=statistics.median(idle) * 1000,
    )


@contextlib.contextmanager
def _served(backend: str, pg_url: str) -> Iterator[tuple[str, str]]:
    """(url, key) of `tally serve` on a fresh database (the benchmark harness makes both)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness.databases import fresh_postgres, fresh_sqlite
    from harness.procs import tally_server

    fresh = fresh_sqlite() if backend == "sqlite" else fresh_postgres(pg_url)
    with fresh as database, contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(_temporary_dir()))
        server = stack.enter_context(tally_server(database.url, workers=1, log_dir=logs))
        yield server.url, database.key


@contextlib.contextmanager
def _temporary_dir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tally-stall-") as folder:
        yield folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--url", help="a running server (then --key is needed)")
    parser.add_argument("--key", help="a write key of the running server's program")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--members", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    if options.url:
        if not options.key:
            parser.error("--url needs --key")
        target: contextlib.AbstractContextManager[tuple[str, str]] = contextlib.nullcontext(
            (options.url, options.key)
        )
    else:
        target = _served(options.backend, options.pg_url)
    with target as (url, key):
        members = enrol(url, key, options.members, prefix=f"stall{int(time.time())}_")
        for round_ in range(1, options.rounds + 1):
            stall = measure_stall(url, key, members, items=options.items)
            print(f"round {round_}: " + "; ".join(stall.lines()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
