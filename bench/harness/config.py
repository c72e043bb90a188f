"""How big and how long each run is: `FULL` for people, `SMOKE` for CI."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

from tally.storage.postgres import PostgresStore

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "lua" / "tally.lua"
RESULTS_DIR = BENCH_DIR / "results"

MEMBER_PREFIX = "m"
HOT_MEMBER = "hot"
HISTORY_MEMBER = "history"
LOAD_SCENARIOS = ("award", "hot", "balance", "mixed")
# One `tally serve` process's connections to PostgreSQL: the database references get as many
# clients, and PgBouncer as many server connections per database.
POOL_SIZE: int = inspect.signature(PostgresStore).parameters["pool_size"].default


@dataclass(frozen=True)
class Mode:
    """The sizes of one run; every figure here is bounded so the run stops by itself."""

    name: str
    seconds: float  # measured time of each wrk scenario
    warmup: float  # unmeasured wrk time before each scenario (0: none)
    members: int
    history_rows: int
    history_load: str  # "sql" (direct inserts) or "http" (bulk awards)
    bulk_items: int
    bulk_repeats: int
    history_repeats: int
    verify_timeout: float  # `tally verify` reads the whole ledger; it is cut off after this
    verify_history: bool  # verify again once the history is loaded (slow with 1M rows)
    connections: int = 64
    threads: int = 2


FULL = Mode(
    name="full",
    seconds=15,
    warmup=3,
    members=10_000,
    history_rows=1_000_000,
    history_load="sql",
    bulk_items=10_000,
    bulk_repeats=5,
    history_repeats=15,
    verify_timeout=120,
    verify_history=False,
)

SMOKE = Mode(
    name="smoke",
    seconds=2,
    warmup=0,
    members=1_000,
    history_rows=20_000,
    history_load="sql",
    bulk_items=10_000,
    bulk_repeats=1,
    history_repeats=3,
    verify_timeout=60,
    verify_history=True,
)
