"""Fresh, throw-away databases: a temporary SQLite file or a new PostgreSQL database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from harness.procs import BIN

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Database:
    """A migrated database with a write key of the `bench` program."""

    backend: str  # "sqlite" or "postgresql"
    url: str
    key: str
    version: str


def tally(*args: str, timeout: float = 600) -> str:
    """Run the `tally` command; its standard output, or an error with what it printed."""
    done = subprocess.run(
        [str(BIN / "tally"), *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"tally {args[0]} failed: {done.stdout}{done.stderr}")
    return done.stdout


def verify(url: str, timeout: float) -> tuple[bool | None, str]:
    """`tally verify`: (True, passed), (False, mismatches) or (None, cut off after `timeout`)."""
    try:
        done = subprocess.run(
            [str(BIN / "tally"), "verify", "--database", url],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None, f"tally verify did not finish within {timeout:.0f} s"
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0, output.splitlines()[-1] if output else ""


def _prepare(backend: str, url: str, version: str) -> Database:
    tally("migrate", "--database", url)
    key = tally("keys", "create", "--database", url, "--program", "bench").strip().splitlines()[-1]
    return Database(backend, url, key, version)


@contextmanager
def fresh_sqlite() -> Iterator[Database]:
    """A new SQLite file in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tally-bench-") as folder:
        url = "sqlite:///" + str(Path(folder) / "bench.db")
        yield _prepare("sqlite", url, sqlite3.sqlite_version)


def postgres_reachable(admin_url: str) -> bool:
    try:
        with psycopg.connect(admin_url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@contextmanager
def fresh_postgres(admin_url: str) -> Iterator[Database]:
    """A new PostgreSQL database, migrated, with a key of the `bench` program; dropped after."""
    with new_postgres_database(admin_url, "bench") as url:
        yield _prepare("postgresql", url, server_version(url))


@contextmanager
def new_postgres_database(admin_url: str, prefix: str) -> Iterator[str]:
    """`CREATE DATABASE <prefix>_<pid>_<time>` on the server of `admin_url`, dropped afterwards;
    its URL."""
    name = f"{prefix}_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_version(url: str) -> str:
    with psycopg.connect(url) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
