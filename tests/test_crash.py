"""kill -9 with writes in flight, on both backends.

Sixteen client threads send awards and deducts, each with an Idempotency-Key of its own, to a
real `tally serve`; once enough of them are acknowledged the server is killed (SIGKILL) with
others still on their way. Restarted on the same database, it must hold every acknowledged
write, `tally verify` must find nothing half-applied, and sending every write again with its key
must leave each member exactly where applying every write once leads.

The normal suite kills at one point per backend; `make soak` (TALLY_SOAK=1) at six.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime

import pytest

from tally.domain import Scope
from tally.maintenance import create_key
from tally.storage import open_store
from tests.support import start_server, verified
from tests.writes import (
    Load,
    actual_ledger,
    assert_present,
    check_resent,
    expected_ledger,
    fund,
    resend_all,
)

SOAK = os.environ.get("TALLY_SOAK") == "1"
# How many acknowledgements to wait for before the kill.
KILL_POINTS = [1, 30, 100, 300, 700, 1500] if SOAK else [150]


def new_key(database_url: str) -> str:
    store = open_store(database_url)
    try:
        store.migrate()
        return create_key(store, program="crash", scope=Scope.WRITE, now=datetime.now(UTC)).secret
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("acks_before_kill", KILL_POINTS)
def test_kill_9_with_writes_in_flight_keeps_every_acknowledged_write_and_applies_each_once(
    database_url: str, acks_before_kill: int
) -> None:
    key = new_key(database_url)
    began = time.monotonic()
    server = start_server(database_url)
    try:
        fund(server.url, key)
        with Load(server.url, key, threads=16, run="crash") as load:
            load.wait_for_acks(acks_before_kill)
            killed_at = time.monotonic()
            server.stop(signal.SIGKILL)
    finally:
        server.stop(signal.SIGKILL)
    writes = load.writes

    # Before the kill every answer was a success: nothing here is about refused writes.
    answered_before = [w for w in writes if w.answered is not None and w.answered < killed_at]
    assert all(w.acknowledged for w in answered_before), {w.status for w in answered_before}
    in_flight = [w for w in writes if w.started < killed_at and (w.answered or 1e18) > killed_at]
    never_answered = [w for w in in_flight if w.answered is None]
    assert never_answered, "the server died with no write in flight"

    verified(database_url)  # on disk as the kill left it: nothing half-applied
    restarted = start_server(database_url)
    try:
        assert_present(restarted.url, key, writes)
        resent = resend_all(restarted.url, key, writes)
        committed_unanswered = check_resent(resent)
        assert actual_ledger(restarted.url, key) == expected_ledger(writes)
    finally:
        restarted.stop()
    verified(database_url)
    sent = sum(w.started < killed_at for w in writes)
    print(
        f"kill after {acks_before_kill} acks: {sent} writes sent before the kill, "
        f"{sum(w.acknowledged for w in writes)} acknowledged, {len(in_flight)} in flight at the "
        f"kill ({len(never_answered)} never answered, {committed_unanswered} of those had "
        f"committed), {time.monotonic() - began:.1f} s"
    )
