"""Webhook delivery across processes, on every backend: several dispatchers on one database
make each attempt once, `tally deliver --once` delivers, and a `tally serve` killed with
SIGKILL while deliveries are in flight loses none of them once it is restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tally.domain import DeliveryStatus, Scope
from tally.maintenance import create_key, run_async
from tally.ports import Store
from tally.service import Ledger
from tally.service.webhooks import BACKLOG
from tally.storage import open_store
from tests.support import Api, FakeClock, run_cli, start_server, tally_command, wait_until
from tests.test_webhooks import feed, new_endpoint
from tests.webhook_support import Receiver, deliver_once, dispatching, policy


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


def succeeded(store: Store, endpoint_id: str) -> int:
    return store.transact(
        lambda tx: tx.webhooks.count_deliveries(endpoint_id, DeliveryStatus.SUCCEEDED)
    )


def test_two_dispatchers_on_one_database_deliver_every_event_exactly_once(
    hooks: Api,
    receiver: Receiver,
    database_url: str,
    clock: FakeClock,
) -> None:
    receiver.always("/hook", "slow")  # 50 ms an answer: both dispatchers have work at once
    endpoint_id = new_endpoint(hooks, receiver.url + "/hook")["endpoint_id"]
    hooks.member("alice")
    awards = [{"member_id": "alice", "points": 1, "reason": f"r{i}"} for i in range(159)]
    assert hooks.post("/v1/points/award/bulk", {"awards": awards}).status_code == 200
    events = feed(hooks.store)
    assert len(events) == 160

    with dispatching(database_url, clock) as one, dispatching(database_url, clock) as two:
        wait_until(
            lambda: succeeded(hooks.store, endpoint_id) == len(events),
            timeout=60,
            what="every delivery to succeed",
        )
    # A succeeded delivery is never attempted again: these counts are final.
    assert receiver.event_ids("/hook") == dict.fromkeys(events, 1)
    assert one.stats.outcomes["succeeded"] > 0 and two.stats.outcomes["succeeded"] > 0
    assert one.stats.outcomes["succeeded"] + two.stats.outcomes["succeeded"] == 160


def test_tally_deliver_once_delivers_what_is_due_and_exits(
    hooks: Api, receiver: Receiver, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_endpoint(hooks, receiver.url + "/hook")
    hooks.member("alice")
    hooks.member("bob")
    monkeypatch.setenv("TALLY_WEBHOOKS_ALLOW_PRIVATE", "true")
    done = run_cli("deliver", "--once", "--database", database_url)
    assert done.returncode == 0, done.stderr
    assert set(receiver.event_ids("/hook")) == set(feed(hooks.store))


def test_tally_deliver_delivers_until_sigterm_then_exits_0(
    hooks: Api, receiver: Receiver, database_url: str
) -> None:
    new_endpoint(hooks, receiver.url + "/hook")
    hooks.member("alice")
    env = {
        **os.environ,
        "TALLY_WEBHOOKS_ALLOW_PRIVATE": "true",
        "TALLY_WEBHOOKS_POLL_SECONDS": "0.05",
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*tally_command(), "deliver", "--database", database_url],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            wait_until(lambda: len(receiver.received) == 1, timeout=30, what="the first delivery")
            hooks.member("bob")  # committed while it runs: found at its next poll
            wait_until(lambda: len(receiver.received) == 2, timeout=30, what="the second")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            process.kill()
            process.wait()
    assert set(receiver.event_ids("/hook")) == set(feed(hooks.store))


@pytest.fixture
def crash_key(database_url: str) -> Iterator[str]:
    store = open_store(database_url)
    store.migrate()
    try:
        yield create_key(store, program="crash", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    finally:
        store.close()


@pytest.mark.slow
def test_kill_9_with_deliveries_in_flight_loses_none_of_them(
    database_url: str, crash_key: str, receiver: Receiver
) -> None:
    receiver.always("/hook", "slow")
    env = {
        "TALLY_WEBHOOKS_ALLOW_PRIVATE": "true",
        "TALLY_WEBHOOKS_POLL_SECONDS": "0.05",
        "TALLY_WEBHOOKS_TIMEOUT_SECONDS": "2",
        "TALLY_WEBHOOKS_RETRY_SCHEDULE": "0,0.5,0.5,1,1,2,2",
    }
    auth = {"Authorization": f"Bearer {crash_key}"}
    server = start_server(database_url, **env)
    try:
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as client:
            made = client.post("/v1/webhook_endpoints", json={"url": receiver.url + "/hook"})
            assert made.status_code == 201, made.text
            for i in range(200):
                assert client.post("/v1/members", json={"member_id": f"m{i}"}).status_code == 201
        wait_until(lambda: len(receiver.received) >= 10, timeout=30, what="deliveries to start")
        server.stop(signal.SIGKILL)
    finally:
        server.stop(signal.SIGKILL)
    store = open_store(database_url)
    try:
        events = set(feed(store, "crash"))
        assert len(events) == 200
        assert len(set(receiver.event_ids("/hook"))) < 200  # some were still to be delivered

        restarted = start_server(database_url, **env)
        try:
            wait_until(
                lambda: set(receiver.event_ids("/hook")) == events,
                timeout=90,
                what="every event to be delivered after the restart",
            )
        finally:
            restarted.stop()
    finally:
        store.close()


def test_a_burst_waits_in_the_outbox_beyond_the_backlog_and_is_still_delivered_whole(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    endpoint_id = new_endpoint(hooks, receiver.url + "/hook")["endpoint_id"]
    hooks.member("alice")
    awards = [{"member_id": "alice", "points": 1, "reason": f"r{i}"} for i in range(1_199)]
    assert hooks.post("/v1/points/award/bulk", {"awards": awards}).status_code == 200
    events = feed(hooks.store)
    assert len(events) == 1_200

    ledger = Ledger(hooks.store, clock=clock, webhooks=policy())
    for _ in range(3):  # fan-out alone, with nothing attempted: it stops at the backlog
        run_async(hooks.store, ledger.webhooks.fan_out)
    pending = hooks.store.transact(
        lambda tx: tx.webhooks.count_deliveries(endpoint_id, DeliveryStatus.PENDING)
    )
    assert pending == BACKLOG

    deliver_once(database_url, clock)
    assert receiver.event_ids("/hook") == dict.fromkeys(events, 1)
    assert succeeded(hooks.store, endpoint_id) == 1_200
