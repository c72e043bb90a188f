"""`tally backup` and `tally restore` on SQLite, and the documented PostgreSQL way (pg_dump).

A backup is taken from a real server while it takes writes; the copy must pass `tally verify`
and hold every write acknowledged before the backup began.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tally.domain import Scope
from tally.maintenance import create_key
from tally.storage import open_store
from tests.support import postgres_bindir, postgres_copy, run_cli, start_server
from tests.writes import Load, actual_ledger, assert_present, auth, expected_ledger, fund

POSTGRES_URL = os.environ.get("TALLY_TEST_POSTGRES_URL")


def new_key(database_url: str) -> str:
    store = open_store(database_url)
    try:
        store.migrate()
        return create_key(store, program="backup", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    finally:
        store.close()


def succeeds(*args: str) -> str:
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def fails(*args: str) -> str:
    """The error `tally` printed for a refused command: one clear line, no traceback."""
    result = run_cli(*args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


@pytest.mark.slow
def test_a_backup_taken_under_write_load_verifies_and_holds_what_was_acknowledged_before(
    tmp_path: Path,
) -> None:
    live = f"sqlite:///{tmp_path}/live.db"
    copy = tmp_path / "copy.db"
    key = new_key(live)
    server = start_server(live)
    try:
        fund(server.url, key)
        with Load(server.url, key, threads=8, run="backup") as load:
            load.wait_for(lambda: len(load.acknowledged()) >= 100, timeout=60, what="100 acks")
            before = load.acknowledged()
            began = time.monotonic()
            succeeds("backup", "--database", live, str(copy))
            ended = time.monotonic()
            count = len(load.acknowledged())
            load.wait_for(lambda: len(load.acknowledged()) > count, timeout=30, what="more acks")
        during = [w for w in load.writes if w.answered and began < w.answered < ended]
        assert during, "no write was acknowledged while the backup ran"
        assert all(w.acknowledged for w in load.writes)
        live_ledger = actual_ledger(server.url, key)
        assert live_ledger == expected_ledger(load.writes)  # the server went on, untouched
    finally:
        server.stop()

    copied = f"sqlite:///{copy}"
    succeeds("verify", "--database", copied)
    from_copy = start_server(copied)
    try:
        assert_present(from_copy.url, key, before)
        ledger = actual_ledger(from_copy.url, key)
        assert all(ledger[m]["transactions"] <= live_ledger[m]["transactions"] for m in live_ledger)
    finally:
        from_copy.stop()
    print(
        f"backup under load: {len(before)} writes acknowledged before it, {len(during)} while "
        f"it ran ({ended - began:.2f} s, {copy.stat().st_size} bytes)"
    )


def test_restore_puts_a_backup_back_only_into_a_stopped_server_and_only_when_told(
    tmp_path: Path,
) -> None:
    live = f"sqlite:///{tmp_path}/live.db"
    backup = tmp_path / "saved.db"
    key = new_key(live)
    server = start_server(live)
    try:
        fund(server.url, key, ["saved"])
        succeeds("backup", "--database", live, str(backup))
        fund(server.url, key, ["later"])  # after the backup: the restore takes it away
        assert "in use" in fails("restore", "--database", live, "--force", str(backup))
    finally:
        server.stop()
    assert "--force" in fails("restore", "--database", live, str(backup))
    succeeds("restore", "--database", live, "--force", str(backup))
    succeeds("verify", "--database", live)
    restored = start_server(live)
    try:
        with httpx.Client(base_url=restored.url, headers=auth(key), timeout=30) as client:
            assert client.get("/v1/members/saved").status_code == 200
            assert client.get("/v1/members/later").status_code == 404
    finally:
        restored.stop()

    # Into a new file no --force is needed.
    fresh = f"sqlite:///{tmp_path}/fresh.db"
    succeeds("restore", "--database", fresh, str(backup))
    succeeds("verify", "--database", fresh)


def test_backup_and_restore_refuse_clearly(tmp_path: Path) -> None:
    live = f"sqlite:///{tmp_path}/live.db"
    new_key(live)
    postgres = "postgresql://tally@127.0.0.1:1/tally"
    assert "pg_dump" in fails("backup", "--database", postgres, str(tmp_path / "x.db"))
    assert "pg_restore" in fails("restore", "--database", postgres, str(tmp_path / "x.db"))

    assert "not a directory" in fails("backup", "--database", live, str(tmp_path / "no/x.db"))
    assert "is a directory" in fails("backup", "--database", live, str(tmp_path))
    missing = f"sqlite:///{tmp_path}/missing.db"
    assert "no database" in fails("backup", "--database", missing, str(tmp_path / "x.db"))
    assert not (tmp_path / "missing.db").exists()  # the backup did not create it
    (tmp_path / "taken.db").write_bytes(b"something")
    assert "--force" in fails("backup", "--database", live, str(tmp_path / "taken.db"))
    assert (tmp_path / "taken.db").read_bytes() == b"something"

    target = f"sqlite:///{tmp_path}/target.db"
    assert "no backup" in fails("restore", "--database", target, str(tmp_path / "absent.db"))
    (tmp_path / "text.db").write_text("not a database")
    assert "not a database" in fails("restore", "--database", target, str(tmp_path / "text.db"))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert "not a Tally" in fails("restore", "--database", target, str(other))
    assert not (tmp_path / "target.db").exists()


@pytest.mark.skipif(POSTGRES_URL is None, reason="TALLY_TEST_POSTGRES_URL is not set")
def test_postgres_backups_with_pg_dump_and_pg_restore_as_documented(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    bindir = postgres_bindir()
    pg_dump = shutil.which("pg_dump") or str(bindir and bindir / "pg_dump")
    pg_restore = shutil.which("pg_restore") or str(bindir and bindir / "pg_restore")
    dump = tmp_path / "tally.dump"
    with postgres_copy(POSTGRES_URL, None, prefix="tally_backup") as source:
        key = new_key(source)
        server = start_server(source)
        try:
            fund(server.url, key)
            ledger = actual_ledger(server.url, key)
            # While it serves: pg_dump reads one snapshot.
            command = [pg_dump, "--format=custom", f"--file={dump}", source]
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        finally:
            server.stop()
        with postgres_copy(POSTGRES_URL, None, prefix="tally_restore") as target:
            command = [pg_restore, "--no-owner", f"--dbname={target}", str(dump)]
            subprocess.run(command, check=True, capture_output=True, timeout=120)
            succeeds("verify", "--database", target)
            restored = start_server(target)
            try:
                assert actual_ledger(restored.url, key) == ledger
            finally:
                restored.stop()
