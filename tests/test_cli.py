"""The `tally` command line (api.md section 7), run as real subprocesses on every backend.

Keys made by `tally keys create` are used against an app served in-process on the same
database, so what the command line does is checked through the API a client would use.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from tally.storage import open_store
from tests.support import Api, FakeClock, postgres_copy, serve_app

POSTGRES_URL = os.environ.get("TALLY_TEST_POSTGRES_URL")
KEY_ID = re.compile(r"\bkey_[0-9A-Za-z]+\b")


def tally(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    """Run `python -m tally ARGS` with no TALLY_* settings but those in `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
    return subprocess.run(
        [sys.executable, "-m", "tally", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, **(env or {})},
        cwd=cwd,
    )


def create_key(url: str, program: str = "acme", *scope: str) -> str:
    """`tally keys create`; the plaintext key is the last line of standard output."""
    result = tally("keys", "create", "--database", url, "--program", program, *scope)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1].strip()
    assert key and " " not in key, result.stdout
    return key


def key_ids(url: str) -> list[str]:
    result = tally("keys", "list", "--database", url)
    assert result.returncode == 0, result.stderr
    return KEY_ID.findall(result.stdout)


@contextlib.contextmanager
def app_on(url: str, key: str, **settings: Any) -> Iterator[Api]:
    """The API served in-process on the database at `url`, called with `key`."""
    store = open_store(url)
    clock = FakeClock(datetime(2020, 1, 1, 12, 0, tzinfo=UTC))
    with serve_app(store, clock=clock, **settings) as client:
        yield Api(client, key, store=store, clock=clock)
    store.close()


def execute_sql(url: str, statement: str) -> None:
    """Change the database behind Tally's back."""
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite:///") :])) as conn:
            conn.execute(statement)
            conn.commit()
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(statement)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no migration has touched."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.db"
        return
    if POSTGRES_URL is None:
        pytest.skip("TALLY_TEST_POSTGRES_URL is not set")
    with postgres_copy(POSTGRES_URL, None, prefix="tally_cli") as url:
        yield url


@pytest.fixture
def database_url(database_url: str) -> str:
    """A database `tally migrate` has made, as where `tally serve` has run."""
    result = tally("migrate", "--database", database_url)
    assert result.returncode == 0, result.stderr
    return database_url


# migrate


def test_migrate_applies_the_schema_then_says_it_is_up_to_date(empty_database_url: str) -> None:
    first = tally("migrate", "--database", empty_database_url)
    assert first.returncode == 0, first.stderr
    second = tally("migrate", "--database", empty_database_url)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout.lower()
    assert key_ids(empty_database_url) == []


def test_migrations_run_together_apply_the_schema_once(empty_database_url: str) -> None:
    """Three `tally migrate` at once on one empty database, as servers deployed together run
    them. yoyo's lock is a row of its lock table, not a session lock, so it holds through
    PgBouncer in transaction mode too (`pytest --pgbouncer`): one applies every migration,
    the others find the schema up to date."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(
            pool.map(lambda _: tally("migrate", "--database", empty_database_url), "abc")
        )
    assert [result.returncode for result in results] == [0, 0, 0], [r.stderr for r in results]
    said = sorted(result.stdout.strip() for result in results)
    assert said[:2] == ["Already up to date."] * 2
    assert re.fullmatch(r"Applied \d+ migration\(s\)\.", said[2]), said
    assert key_ids(empty_database_url) == []


# keys


def test_keys_create_prints_a_write_key_that_works_against_the_api(database_url: str) -> None:
    key = create_key(database_url, "acme")
    with app_on(database_url, key) as api:
        assert api.get("/v1/members").status_code == 200
        api.member("m")
        api.award("m", 10)
        assert api.get("/v1/program").json()["data"]["name"] == "acme"


def test_a_read_key_from_the_command_line_can_read_but_not_write(database_url: str) -> None:
    key = create_key(database_url, "acme", "--scope", "read")
    with app_on(database_url, key) as api:
        assert api.get("/v1/members").status_code == 200
        refused = api.post("/v1/members", {"member_id": "m"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")


def test_keys_of_one_program_share_its_data_and_other_programs_see_none(
    database_url: str,
) -> None:
    first, second, stranger = (create_key(database_url, p) for p in ("acme", "acme", "other"))
    with app_on(database_url, first) as api:
        api.member("m")
        api.award("m", 10)
        assert api.get("/v1/members/m/balance", key=second).json()["data"]["balance"] == 10
        unseen = api.get("/v1/members/m/balance", key=stranger)
        assert (unseen.status_code, unseen.json()["error"]["code"]) == (404, "member_not_found")


def test_keys_list_shows_each_key_id_and_never_a_secret(database_url: str) -> None:
    secrets = [
        create_key(database_url, "acme"),
        create_key(database_url, "other", "--scope", "read"),
    ]
    listed = tally("keys", "list", "--database", database_url)
    assert listed.returncode == 0, listed.stderr
    assert len(set(KEY_ID.findall(listed.stdout))) == 2
    assert "acme" in listed.stdout and "other" in listed.stdout
    for secret in secrets:
        assert secret not in listed.stdout + listed.stderr


def test_a_revoked_key_is_refused_by_a_running_server(database_url: str) -> None:
    kept = create_key(database_url, "acme")
    before = set(key_ids(database_url))
    revoked = create_key(database_url, "acme")
    (revoked_id,) = set(key_ids(database_url)) - before
    with app_on(database_url, revoked, key_cache_seconds=0) as api:
        api.member("m")
        result = tally("keys", "revoke", "--database", database_url, revoked_id)
        assert result.returncode == 0, result.stderr
        for response in (api.get("/v1/members/m"), api.post("/v1/members", {"member_id": "n"})):
            assert response.status_code == 401, response.text
            assert response.json()["error"]["code"] == "unauthorized"
        assert api.get("/v1/members/m", key=kept).status_code == 200
        assert api.get("/v1/members/n", key=kept).status_code == 404


def test_revoking_an_unknown_key_exits_1(database_url: str) -> None:
    create_key(database_url, "acme")
    result = tally("keys", "revoke", "--database", database_url, "key_01NOSUCHKEY0000000000000")
    assert result.returncode == 1
    assert result.stderr.strip() or result.stdout.strip()


def _everything_stored(url: str) -> bytes:
    """Every byte of the database: the SQLite files, or every row of every PostgreSQL table."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return b"".join(f.read_bytes() for f in path.parent.iterdir() if f.is_file())
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        rows = [
            conn.execute(f'SELECT row_to_json(t)::text FROM "{name}" t').fetchall()
            for (name,) in tables
        ]
    return "\n".join(str(r) for table in rows for r in table).encode()


def test_a_created_key_is_stored_only_as_a_hash(database_url: str) -> None:
    secret = create_key(database_url, "acme")
    stored = _everything_stored(database_url)
    assert b"acme" in stored  # the program's row was read
    for fragment in (secret, secret[-20:], secret[-20:][::-1]):
        assert fragment.encode() not in stored


def test_the_database_can_be_given_by_TALLY_DATABASE_URL(database_url: str, tmp_path: Path) -> None:
    env = {"TALLY_DATABASE_URL": database_url}
    result = tally("keys", "create", "--program", "acme", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    with app_on(database_url, key) as api:
        assert api.get("/v1/members").status_code == 200
    assert not (tmp_path / "tally.db").exists()


# verify


def build_a_ledger(api: Api) -> None:
    """Member `alice` with awards, deducts, a pending award, a redemption and its refund, and
    transfers to and from `bob` (the one to bob draws on two lots of different dates)."""
    api.member("alice")
    api.award("alice", 500)
    api.award("alice", 250, expires_at="2030-01-01T00:00:00Z")
    assert api.deduct("alice", 120).status_code == 201
    api.award("alice", 40, available_at="2030-01-01T00:00:00Z")
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 30, "stock": 10})
    reward_id = reward.json()["data"]["reward_id"]
    first = api.post("/v1/redemptions", {"member_id": "alice", "reward_id": reward_id})
    assert api.post("/v1/redemptions", {"member_id": "alice", "reward_id": reward_id}).is_success
    redemption_id = first.json()["data"]["redemption_id"]
    assert api.post(f"/v1/redemptions/{redemption_id}/cancel").status_code == 200
    assert api.deduct("alice", 7).status_code == 201
    api.member("bob")
    for sender, receiver, points in (("alice", "bob", 400), ("bob", "alice", 20)):
        body = {"from_member_id": sender, "to_member_id": receiver, "points": points}
        response = api.post("/v1/points/transfer", {**body, "reason": "gift"})
        assert response.status_code == 201, response.text
    build_reversals(api)


def build_reversals(api: Api) -> None:
    """Alice reverses part of an award and part of a deduct; `carol` reverses an award she had
    mostly spent into a debt of 80, and a later award of 30 pays part of it back."""

    def reverse(transaction_id: str, **fields: object) -> None:
        path = f"/v1/transactions/{transaction_id}/reverse"
        response = api.post(path, {"reason": "returned", **fields})
        assert response.status_code == 201, response.text

    reverse(api.history("alice", type="award")[-1]["transaction_id"], points=10)
    reverse(api.history("alice", type="deduct")[0]["transaction_id"], points=5)
    api.member("carol")
    award = api.award("carol", 100)["transaction_id"]
    assert api.deduct("carol", 80).status_code == 201
    reverse(award, allow_negative=True)
    assert api.award("carol", 30)["new_balance"] == -50


def test_verify_exits_0_on_a_consistent_ledger(database_url: str) -> None:
    with app_on(database_url, create_key(database_url)) as api:
        build_a_ledger(api)
    result = tally("verify", "--database", database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MISMATCH" not in result.stdout


CORRUPTIONS = {
    "balance": "UPDATE members SET balance = balance + 1",
    "lifetime_earned": "UPDATE members SET lifetime_earned = lifetime_earned + 5",
    "lifetime_redeemed": "UPDATE members SET lifetime_redeemed = lifetime_redeemed + 30",
    "lifetime_deducted": "UPDATE members SET lifetime_deducted = lifetime_deducted - 1",
    "pending": "UPDATE members SET pending = pending + 1",
    "a deduct's points": "UPDATE entries SET points = points + 1 WHERE type = 'deduct'",
    "a balance_after": "UPDATE entries SET balance_after = balance_after + 1 WHERE type = 'award'",
    "a lot's remainder": "UPDATE lots SET remaining = remaining - 1 WHERE remaining > 0",
    "lifetime_transferred_in": "UPDATE members SET lifetime_transferred_in = 1",
    "lifetime_transferred_out": "UPDATE members SET lifetime_transferred_out = 0",
    "a transfer's points": "UPDATE entries SET points = points + 1 WHERE type = 'transfer_in'",
    "a transferred lot's size": "UPDATE lots SET points = points + 1, remaining = remaining + 1 "
    "WHERE source_id IN (SELECT id FROM entries WHERE type = 'transfer_in')",
}


TRANSFER_ROW_CORRUPTIONS = {
    "a transfer_out's draws": "UPDATE draws SET points = points - 1 WHERE spend_id IN "
    "(SELECT id FROM entries WHERE type = 'transfer_out')",
    "a transferred lot's source": "UPDATE lots SET source_id = (SELECT id FROM entries WHERE "
    "type = 'deduct' LIMIT 1) WHERE source_id <> entry_id",
}


@pytest.mark.parametrize(
    "statement", TRANSFER_ROW_CORRUPTIONS.values(), ids=list(TRANSFER_ROW_CORRUPTIONS)
)
def test_verify_traces_every_transferred_point_through_draws_and_lots(
    database_url: str, statement: str
) -> None:
    with app_on(database_url, create_key(database_url)) as api:
        build_a_ledger(api)
    execute_sql(database_url, statement)
    result = tally("verify", "--database", database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    mismatches = [line for line in result.stdout.splitlines() if line.startswith("MISMATCH")]
    assert any("txn_" in line and "its draws (or lots)" in line for line in mismatches), (
        result.stdout
    )


# What each corruption of a reversal, a debt or a repayment is caught as.
REVERSAL_CORRUPTIONS = {
    "points_reversed": (
        "UPDATE entries SET points_reversed = points_reversed + 1 WHERE points_reversed > 0",
        "points_reversed is",
    ),
    "a reversal's target": (
        "UPDATE entries SET reverses = (SELECT id FROM entries WHERE type = 'redeem' LIMIT 1) "
        "WHERE type = 'reversal' AND points > 0",
        "is not a reversal of a posted award",
    ),
    "a reversal's sign": (
        "UPDATE entries SET points = -points, balance_after = balance_after - 2 * points "
        "WHERE type = 'reversal' AND points > 0",
        "is not a reversal of a posted award",
    ),
    "a reversal's points": (
        "UPDATE entries SET points = points - 1 WHERE type = 'reversal' AND points < 0",
        "the chain gives",
    ),
    "a debt": ("UPDATE members SET debt = debt + 1 WHERE debt > 0", "reversals are owed"),
    "a debt where none is owed": (
        "UPDATE members SET debt = 3, balance = balance + 3 WHERE member_id = 'alice'",
        "owes 3 at once",
    ),
    "a repayment's draw": (
        "UPDATE draws SET points = points - 1 WHERE spend_id IN "
        "(SELECT id FROM entries WHERE type = 'reversal' AND points < -50)",
        "its draws (or lots)",
    ),
    "a given-back lot's size": (
        "UPDATE lots SET points = points + 1, remaining = remaining + 1 "
        "WHERE source_id IN (SELECT id FROM entries WHERE type = 'reversal')",
        "its draws (or lots)",
    ),
    "a reversal that is not one": (
        "UPDATE entries SET type = 'deduct' WHERE type = 'reversal' AND points < 0",
        "is not a reversal of a posted award",
    ),
}


@pytest.mark.parametrize(
    ("statement", "caught_as"), REVERSAL_CORRUPTIONS.values(), ids=list(REVERSAL_CORRUPTIONS)
)
def test_verify_traces_every_reversed_point_and_every_debt(
    database_url: str, statement: str, caught_as: str
) -> None:
    with app_on(database_url, create_key(database_url)) as api:
        build_a_ledger(api)
    execute_sql(database_url, statement)
    result = tally("verify", "--database", database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    mismatches = [line for line in result.stdout.splitlines() if line.startswith("MISMATCH")]
    assert any(caught_as in line for line in mismatches), result.stdout


@pytest.mark.parametrize("statement", CORRUPTIONS.values(), ids=list(CORRUPTIONS))
def test_verify_exits_1_and_prints_a_mismatch_after_a_figure_is_corrupted(
    database_url: str, statement: str
) -> None:
    with app_on(database_url, create_key(database_url)) as api:
        build_a_ledger(api)
    execute_sql(database_url, statement)
    result = tally("verify", "--database", database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    mismatches = [line for line in result.stdout.splitlines() if line.startswith("MISMATCH")]
    assert mismatches, result.stdout
    assert any("alice" in line for line in mismatches), result.stdout


# sweep


def test_sweep_matures_pending_points_and_expires_lots_that_are_due(database_url: str) -> None:
    key = create_key(database_url)
    with app_on(database_url, key) as api:  # its clock stands at 2020-01-01T12:00:00Z
        api.member("alice")
        api.award("alice", 100, available_at="2020-01-02T00:00:00Z")
        api.award("alice", 30, expires_at="2020-06-01T00:00:00Z")
        api.award("alice", 5)
        assert (api.balance("alice")["balance"], api.balance("alice")["pending"]) == (35, 100)
    result = tally("sweep", "--database", database_url)
    assert result.returncode == 0, result.stderr
    with app_on(database_url, key) as api:
        balance = api.balance("alice")
        assert {k: balance[k] for k in ("balance", "pending", "lifetime_expired")} == {
            "balance": 105,
            "pending": 0,
            "lifetime_expired": 30,
        }
        assert [row["type"] for row in api.history("alice")].count("expire") == 1
    assert tally("verify", "--database", database_url).returncode == 0


def test_sweep_exits_0_when_nothing_is_due(database_url: str) -> None:
    result = tally("sweep", "--database", database_url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


# bad database URLs

COMMANDS = [
    ["migrate"],
    ["keys", "list"],
    ["keys", "create", "--program", "acme"],
    ["keys", "revoke", "key_01NOSUCHKEY0000000000000"],
    ["verify"],
    ["sweep"],
]

BAD_URLS = {
    "an unknown scheme": "mysql://localhost/tally",
    "sqlite without a path": "sqlite://",
    "not a URL": "tally.db",
    "a PostgreSQL server that is not there": "postgresql://postgres@127.0.0.1:1/tally",
}


def unclear(result: Any) -> bool:
    """A failure that did not exit non-zero with a message about the database, or showed a trace."""
    stderr = result.stderr
    return result.returncode == 0 or "Traceback" in stderr or "database" not in stderr.lower()


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=list(BAD_URLS))
def test_a_bad_database_url_is_a_clear_error_on_every_command(url: str, tmp_path: Path) -> None:
    results = {" ".join(c): tally(*c, "--database", url, cwd=tmp_path) for c in COMMANDS}
    assert {
        command: (result.returncode, result.stderr.strip().splitlines()[-1:])
        for command, result in results.items()
        if unclear(result)
    } == {}


def test_a_postgresql_database_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    if POSTGRES_URL is None:
        pytest.skip("TALLY_TEST_POSTGRES_URL is not set")
    url = urlunsplit(urlsplit(POSTGRES_URL)._replace(path="/no_such_tally_database"))
    result = tally("migrate", "--database", url, cwd=tmp_path)
    assert not unclear(result), result.stderr
    assert "no_such_tally_database" in result.stderr


# a newcomer's mistakes

ACTING_ON_A_DATABASE = [
    ["keys", "list"],
    ["keys", "create", "--program", "acme"],
    ["keys", "revoke", "key_01NOSUCHKEY0000000000000"],
    ["verify"],
    ["sweep"],
    ["deliver", "--once"],
]


@pytest.mark.parametrize("command", ACTING_ON_A_DATABASE, ids=" ".join)
def test_commands_refuse_a_sqlite_database_that_does_not_exist_and_name_the_path(
    command: list[str], tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = tally(*command, cwd=elsewhere)  # the default ./tally.db, run from the wrong place
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"there is no database at {(elsewhere / 'tally.db').resolve()}" in result.stderr
    assert list(elsewhere.iterdir()) == []  # no empty database left behind


def test_migrate_and_serve_still_create_a_sqlite_database(tmp_path: Path) -> None:
    result = tally("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tally.db").exists()
    assert tally("keys", "list", cwd=tmp_path).returncode == 0


def test_keys_create_says_on_stderr_when_it_creates_a_program_and_names_the_others(
    database_url: str,
) -> None:
    first = tally("keys", "create", "--database", database_url, "--program", "acme")
    assert first.returncode == 0, first.stderr
    assert "there was no program 'acme'; it was created now. Existing programs: none." in (
        first.stderr
    )
    tally("keys", "create", "--database", database_url, "--program", "zeta")
    typo = tally("keys", "create", "--database", database_url, "--program", "acmee")
    assert typo.returncode == 0, typo.stderr
    assert "no program 'acmee'" in typo.stderr
    assert "Existing programs: 'acme', 'zeta'." in typo.stderr
    assert typo.stdout.strip().splitlines()[-1].startswith("tally_")  # the key stays last
    again = tally("keys", "create", "--database", database_url, "--program", "acme")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""


def test_make_run_serves_the_database_and_port_it_is_given(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TALLY_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "TALLY_PORT": "9123"}
    planned = subprocess.run(
        ["make", "-n", "-s", "run"], capture_output=True, text=True, cwd=root, env=env, timeout=60
    )
    assert planned.returncode == 0, planned.stderr
    line = planned.stdout.strip().splitlines()[-1]
    assert f'--database "sqlite:///{tmp_path}/x.db" --port "9123"' in line
    default = subprocess.run(
        ["make", "-n", "-s", "run"],
        capture_output=True,
        text=True,
        cwd=root,
        env={k: v for k, v in os.environ.items() if not k.startswith("TALLY_")},
        timeout=60,
    )
    assert '--database "sqlite:///./tally.db" --port "8000"' in default.stdout
