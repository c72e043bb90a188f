"""The webhooks scenarios: award throughput with an endpoint subscribed to every event (the
dispatcher delivering to `refs.receiver` meanwhile), and the time to deliver 10,000 events.

Issue 12's targets: award with webhooks on >= 80% of award with no endpoint, on both backends;
10,000 deliveries to a fast local receiver in under 60 s.
"""

from __future__ import annotations

import time

import httpx

from harness.config import MEMBER_PREFIX, Mode
from harness.load import LoadResult, _timed
from harness.seed import auth

DRAIN_TIMEOUT = 300.0  # seconds: the run stops by itself even if deliveries stall


def received(receiver_url: str) -> int:
    return int(httpx.get(receiver_url + "/count", timeout=10).text)


def subscribe(tally_url: str, key: str, receiver_url: str) -> str:
    """A webhook endpoint for every event type, pointing at the receiver; its id."""
    response = httpx.post(
        tally_url + "/v1/webhook_endpoints",
        json={"url": receiver_url + "/hook", "events": ["*"], "description": "bench receiver"},
        headers=auth(key),
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["data"]["endpoint_id"])


def unsubscribe(tally_url: str, key: str, endpoint_id: str) -> None:
    """Delete the endpoint, and with it the deliveries it has not made."""
    response = httpx.delete(
        f"{tally_url}/v1/webhook_endpoints/{endpoint_id}", headers=auth(key), timeout=60
    )
    response.raise_for_status()


def wait_for(receiver_url: str, count: int) -> float | None:
    """Seconds until the receiver has `count` POSTs in all (None: not within the timeout)."""
    started = time.perf_counter()
    while time.perf_counter() - started < DRAIN_TIMEOUT:
        if received(receiver_url) >= count:
            return time.perf_counter() - started
        time.sleep(0.05)  # polling another process's progress
    return None


def time_deliveries(tally_url: str, key: str, receiver_url: str, mode: Mode) -> LoadResult:
    """One bulk award of `mode.bulk_items` (one event each), timed from the request until the
    receiver has every delivery."""
    before = received(receiver_url)
    awards = [
        {"member_id": f"{MEMBER_PREFIX}{i % mode.members}", "points": 1, "reason": "bench hook"}
        for i in range(mode.bulk_items)
    ]
    started = time.perf_counter()
    with httpx.Client(base_url=tally_url, headers=auth(key), timeout=120) as client:
        response = client.post("/v1/points/award/bulk", json={"awards": awards})
    ok = response.status_code == 200 and response.json()["data"]["failed"] == 0
    waited = wait_for(receiver_url, before + mode.bulk_items)
    took = time.perf_counter() - started
    failures = 0 if ok and waited is not None else 1
    return _timed(f"deliver {mode.bulk_items:,}", [took], failures, items=mode.bulk_items)
