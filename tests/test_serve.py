"""`tally serve` as a user runs it: first-run key, and the background sweep."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from tally.commands import CreatedKey
from tally.domain import EntryStatus, Scope
from tally.maintenance import bootstrap, create_key
from tally.ports import Store
from tally.storage import open_store
from tests.support import free_port, start_server, tally_command


def test_serve_on_an_empty_database_prints_a_working_write_key(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/first.db"
    port = free_port()
    process = subprocess.Popen(  # the port as a setting, as `make run` passes it
        [*tally_command(), "serve", "--database", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TALLY_SWEEP_INTERVAL": "0", "TALLY_PORT": str(port)},
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().decode().strip() for _ in range(3)]
        key = lines[-1]
        assert key.startswith("tally_"), lines
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/v1/members",
                    json={"member_id": "first"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
        assert response.status_code == 201
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_bootstraps_racing_on_an_empty_database_make_one_program_and_one_key(
    database_url: str,
) -> None:
    """Eight first runs at once on one empty database, each with a store of its own (as eight
    servers would be): exactly one creates `default` and gets a key to print."""
    stores = [open_store(database_url) for _ in range(8)]
    stores[0].migrate()
    together = threading.Barrier(len(stores), timeout=30)

    def first_run(store: Store) -> CreatedKey | None:
        together.wait()
        return bootstrap(store, now=datetime.now(UTC))

    try:
        with ThreadPoolExecutor(max_workers=len(stores)) as pool:
            created = list(pool.map(first_run, stores))
        keys = stores[0].transact(lambda tx: tx.keys.all())
        programs = stores[0].transact(lambda tx: tx.programs.count())
    finally:
        for store in stores:
            store.close()
    made = [key for key in created if key is not None]
    assert len(made) == 1 and made[0].program == "default"
    assert [(key.id, key.program_name) for key in keys] == [(made[0].key_id, "default")]
    assert programs == 1


def test_servers_started_together_on_an_empty_database_print_one_key(
    database_url: str,
) -> None:
    """Three `tally serve` processes started at once on one database no one has used."""
    ports = [free_port() for _ in range(3)]
    processes = [
        subprocess.Popen(
            [*tally_command(), "serve", "--database", database_url, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TALLY_SWEEP_INTERVAL": "0"},
            start_new_session=True,
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 60
        for port in ports:
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "a server did not start"
                    time.sleep(0.05)  # waiting for a port to open, not synchronising steps
    finally:
        for process in processes:
            process.terminate()
        printed = [process.communicate(timeout=30)[0].decode() for process in processes]
    keys = [line for out in printed for line in out.splitlines() if line.startswith("tally_")]
    assert len(keys) == 1, printed
    store = open_store(database_url)
    try:
        assert len(store.transact(lambda tx: tx.keys.all())) == 1
    finally:
        store.close()


def test_the_server_matures_pending_points_by_itself(database_url: str) -> None:
    """Nobody reads the member: the background sweep posts the award when it falls due."""
    store = open_store(database_url)
    store.migrate()
    key = create_key(store, program="p", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    server = start_server(database_url, TALLY_SWEEP_INTERVAL="0.2")
    auth = {"Authorization": f"Bearer {key}"}
    try:
        httpx.post(server.url + "/v1/members", json={"member_id": "m"}, headers=auth)
        due = datetime.now(UTC) + timedelta(seconds=1)
        created = httpx.post(
            server.url + "/v1/points/award",
            json={
                "member_id": "m",
                "points": 7,
                "reason": "later",
                "available_at": due.isoformat(),
            },
            headers=auth,
        ).json()["data"]
        assert created["status"] == "pending"
        # Watch the database directly: reading through the API would apply it on its own.
        deadline = time.monotonic() + 20
        while True:
            entry = store.transact(lambda tx: tx.entries.get(1, created["transaction_id"]))
            assert entry is not None
            if entry.status == EntryStatus.POSTED:
                break
            assert time.monotonic() < deadline, "the background sweep never posted the award"
            time.sleep(0.05)  # polling the database for an effect of the real clock
        assert entry.balance_after == 7
        assert entry.posted_at is not None and entry.posted_at >= due - timedelta(microseconds=1)
    finally:
        server.stop()
        store.close()


def test_the_server_names_no_software_and_says_the_date(tmp_path: object) -> None:
    server = start_server(f"sqlite:///{tmp_path}/headers.db")
    try:
        response = httpx.get(server.url + "/v1/members")
    finally:
        server.stop()
    assert response.status_code == 401
    assert "server" not in response.headers
    assert response.headers["date"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_server_limits_each_key_as_tally_rate_limit_says(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/limited.db"
    store = open_store(url)
    store.migrate()
    key = create_key(store, program="p", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    store.close()
    server = start_server(url, TALLY_RATE_LIMIT="0.1/s:2")  # a token every 10 s
    try:
        auth = {"Authorization": f"Bearer {key}"}
        answers = [httpx.get(server.url + "/v1/program", headers=auth) for _ in range(3)]
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["ratelimit-policy"].startswith('"default";q=2;w=20')
    assert answers[2].headers["retry-after"] == "10"


def test_the_server_logs_each_request_as_a_json_line(tmp_path: object) -> None:
    server = start_server(f"sqlite:///{tmp_path}/logs.db")
    try:
        httpx.get(server.url + "/v1/members/m-1", headers={"X-Request-Id": "served-1"})
    finally:
        server.stop()  # SIGTERM: the lines still in the buffer are written on the way out
    lines = [json.loads(line) for line in server.errors().splitlines() if line.startswith("{")]
    [line] = [line for line in lines if line.get("request_id") == "served-1"]
    assert (line["route"], line["status"], line["logger"]) == (
        "/v1/members/{member_id}",
        401,
        "tally.access",
    )
