"""Webhooks (api.md section 8), on every backend: endpoints, signatures checked by an independent
implementation (the `standardwebhooks` package), retries and the delivery log, the subscription
filter, the SSRF guard, secret rotation, receivers that misbehave, and disabling.

Deliveries go to a real HTTP receiver on 127.0.0.1 (`webhook_support.Receiver`); the dispatcher
runs in-process on a store of its own, as `tally deliver --once` would, with the test's clock
(which starts at the real time, so signatures verify within the library's 5-minute tolerance).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tally.delivery.dispatcher import CROWD, CROWDED_PACE
from tally.domain import Scope
from tally.maintenance import create_key, run_async, sweep_now
from tally.ports import Store
from tally.service import Ledger, WebhookPolicy
from tally.storage import open_store
from tests.ledger_support import program_id
from tests.support import Api, FakeClock, serve_app, wait_until
from tests.webhook_support import (
    Received,
    Receiver,
    deliver_once,
    dispatcher_for,
    dispatching,
    policy,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


def new_endpoint(api: Api, url: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/v1/webhook_endpoints", {"url": url, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def deliveries(api: Api, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", per_page=100, **params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def only_delivery(api: Api, endpoint_id: str) -> dict[str, Any]:
    [found] = deliveries(api, endpoint_id)
    return found


def feed(store: Store, program: str = "acme") -> dict[str, str]:
    """Every event of the program in its feed: id -> body."""
    pid = program_id(store, program)
    found = store.transact(lambda tx: tx.events.after(pid, None, limit=100_000))
    return {event.id: event.body for _, event in found}


def field_of(response: Any) -> str | None:
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    return str(details[0]["field"]) if details else None


# Signatures


def test_a_delivery_verifies_with_the_standard_webhooks_library_and_not_with_another_secret(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    endpoint = new_endpoint(hooks, receiver.url + "/hook")
    assert endpoint["secret"].startswith("whsec_")
    hooks.member("alice")
    deliver_once(database_url, clock)

    [got] = receiver.at("/hook")
    [(event_id, body)] = feed(hooks.store).items()
    assert got.body.decode() == body  # the event's JSON, exactly as the feed shows it
    assert got.headers["content-type"] == "application/json"
    assert got.headers["webhook-id"] == event_id
    assert int(got.headers["webhook-timestamp"]) == int(clock().timestamp())
    payload = Webhook(endpoint["secret"]).verify(got.body, got.headers)
    assert payload["event_id"] == event_id and payload["type"] == "member.created"
    other = new_endpoint(hooks, receiver.url + "/other")["secret"]
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(got.body, got.headers)
    tampered = got.body.replace(b"alice", b"mallory")
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint["secret"]).verify(tampered, got.headers)


def test_the_secret_is_shown_only_when_created_and_rotated(hooks: Api, receiver: Receiver) -> None:
    endpoint = new_endpoint(hooks, receiver.url + "/hook", description="orders")
    endpoint_id = endpoint["endpoint_id"]
    assert endpoint_id.startswith("we_") and endpoint["events"] == ["*"]
    shown = [
        hooks.get(f"/v1/webhook_endpoints/{endpoint_id}").text,
        hooks.get("/v1/webhook_endpoints").text,
        hooks.patch(f"/v1/webhook_endpoints/{endpoint_id}", {"description": "all"}).text,
    ]
    assert all("whsec_" not in text and "secret" not in text for text in shown)
    rotated = hooks.post(f"/v1/webhook_endpoints/{endpoint_id}/rotate_secret")
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["data"]["secret"] not in ("", endpoint["secret"])


# Retries and the delivery log


def test_a_failing_delivery_is_retried_on_the_schedule_and_the_log_shows_each_attempt(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.plan("/flaky", 500, 503)
    endpoint_id = new_endpoint(hooks, receiver.url + "/flaky")["endpoint_id"]
    hooks.member("alice")
    schedule = (0.0, 1.0, 1.0, 1.0)

    deliver_once(database_url, clock, schedule=schedule)
    first = only_delivery(hooks, endpoint_id)
    assert (first["status"], first["attempts"], first["last_status_code"]) == ("pending", 1, 500)
    assert first["next_attempt_at"] is not None and "500" in first["last_error"]
    deliver_once(database_url, clock, schedule=schedule)  # not due yet: nothing happens
    assert only_delivery(hooks, endpoint_id)["attempts"] == 1

    clock.advance(seconds=2)
    deliver_once(database_url, clock, schedule=schedule)
    second = only_delivery(hooks, endpoint_id)
    assert (second["status"], second["attempts"], second["last_status_code"]) == ("pending", 2, 503)
    clock.advance(seconds=2)
    deliver_once(database_url, clock, schedule=schedule)
    third = only_delivery(hooks, endpoint_id)
    assert (third["status"], third["attempts"], third["last_status_code"]) == ("succeeded", 3, 200)
    assert third["next_attempt_at"] is None and third["last_error"] is None
    assert receiver.event_ids("/flaky") == {first["event_id"]: 3}
    assert [d["status"] for d in deliveries(hooks, endpoint_id, status="succeeded")] == [
        "succeeded"
    ]
    assert deliveries(hooks, endpoint_id, status="pending") == []


def test_an_exhausted_schedule_fails_the_delivery_and_retry_and_recover_queue_it_again(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.always("/down", 500)
    endpoint_id = new_endpoint(hooks, receiver.url + "/down")["endpoint_id"]
    hooks.member("alice")
    deliver_once(database_url, clock)  # three attempts, each at once
    failed = only_delivery(hooks, endpoint_id)
    assert (failed["status"], failed["attempts"], failed["next_attempt_at"]) == ("failed", 3, None)

    receiver.always("/down", 200)
    path = f"/v1/webhook_endpoints/{endpoint_id}/deliveries/{failed['delivery_id']}/retry"
    queued = hooks.post(path)
    assert queued.status_code == 200, queued.text
    assert queued.json()["data"]["status"] == "pending"
    deliver_once(database_url, clock)
    assert only_delivery(hooks, endpoint_id)["status"] == "succeeded"
    assert only_delivery(hooks, endpoint_id)["attempts"] == 4

    receiver.always("/down", 500)
    clock.advance(minutes=1)
    hooks.member("bob")
    hooks.member("carol")
    deliver_once(database_url, clock)
    assert [d["status"] for d in deliveries(hooks, endpoint_id, status="failed")] == ["failed"] * 2
    recover = f"/v1/webhook_endpoints/{endpoint_id}/recover"
    none = hooks.post(recover, {"since": (clock().replace(year=clock().year + 1)).isoformat()})
    assert none.status_code == 200 and none.json()["data"] == {"queued": 0}
    receiver.always("/down", 200)
    since = clock.now.isoformat().replace("+00:00", "Z")
    assert hooks.post(recover, {"since": since}).json()["data"] == {"queued": 2}
    deliver_once(database_url, clock)
    assert {d["status"] for d in deliveries(hooks, endpoint_id)} == {"succeeded"}
    assert set(receiver.event_ids("/down")) == set(feed(hooks.store))


# The subscription filter


def test_an_endpoint_receives_only_the_types_it_subscribed_to_and_nothing_from_before_it(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    hooks.member("before")
    only = new_endpoint(hooks, receiver.url + "/txn", events=["transaction.created"])
    every = new_endpoint(hooks, receiver.url + "/all")
    hooks.member("alice")
    hooks.award("alice", 100)
    deliver_once(database_url, clock)

    def types(received: list[Received]) -> list[str]:
        return sorted(json.loads(r.body)["type"] for r in received)

    assert types(receiver.at("/txn")) == ["transaction.created"]
    assert types(receiver.at("/all")) == ["member.created", "transaction.created"]
    assert b"before" not in b"".join(r.body for r in receiver.received)
    assert len(deliveries(hooks, only["endpoint_id"])) == 1
    assert len(deliveries(hooks, every["endpoint_id"])) == 2


# The SSRF guard


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://localhost/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
        "https://no-such-host.invalid/hook",
    ],
)
def test_an_endpoint_on_a_private_address_is_refused_naming_url(api: Api, url: str) -> None:
    response = api.post("/v1/webhook_endpoints", {"url": url})
    assert field_of(response) == "url"
    assert api.get("/v1/webhook_endpoints").json()["meta"]["total"] == 0
    endpoint = api.post("/v1/webhook_endpoints", {"url": "https://8.8.8.8/hook"})
    assert endpoint.status_code == 201, endpoint.text
    changed = api.patch(
        f"/v1/webhook_endpoints/{endpoint.json()['data']['endpoint_id']}", {"url": url}
    )
    assert field_of(changed) == "url"


def test_the_guard_refuses_again_at_delivery_time(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    endpoint_id = new_endpoint(hooks, receiver.url + "/hook")["endpoint_id"]  # allowed then
    hooks.member("alice")
    deliver_once(database_url, clock, allow_private=False, schedule=(0.0, 60.0))
    assert receiver.received == []
    refused = only_delivery(hooks, endpoint_id)
    assert (refused["status"], refused["attempts"], refused["last_status_code"]) == (
        "pending",
        1,
        None,
    )
    assert "127.0.0.1" in refused["last_error"] and "loopback" in refused["last_error"]


# Rotation


def test_after_a_rotation_both_secrets_sign_for_24_hours_then_only_the_new_one(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    endpoint = new_endpoint(hooks, receiver.url + "/hook")
    old = endpoint["secret"]
    rotated = hooks.post(f"/v1/webhook_endpoints/{endpoint['endpoint_id']}/rotate_secret")
    new = rotated.json()["data"]["secret"]
    hooks.member("alice")
    deliver_once(database_url, clock)

    [during] = receiver.at("/hook")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(old).verify(during.body, during.headers)["type"] == "member.created"
    assert Webhook(new).verify(during.body, during.headers)["type"] == "member.created"
    assert signatures(during) == {expected(old, during), expected(new, during)}

    clock.advance(hours=24, seconds=1)
    hooks.member("bob")
    deliver_once(database_url, clock)
    after = receiver.at("/hook")[1]
    assert signatures(after) == {expected(new, after)}
    assert expected(old, after) not in after.headers["webhook-signature"]


def signatures(received: Received) -> set[str]:
    return set(received.headers["webhook-signature"].split(" "))


def expected(secret: str, received: Received) -> str:
    """The signature the independent implementation makes for this delivery with `secret`."""
    stamp = datetime.fromtimestamp(int(received.headers["webhook-timestamp"]), tz=UTC)
    return str(Webhook(secret).sign(received.headers["webhook-id"], stamp, received.body.decode()))


# Receivers that misbehave


def test_a_hanging_receiver_does_not_hold_up_another_endpoints_deliveries(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.always("/hang", "hang")
    new_endpoint(hooks, receiver.url + "/hang")
    new_endpoint(hooks, receiver.url + "/ok")
    for i in range(12):
        hooks.member(f"m{i}")
    with dispatching(database_url, clock, timeout=30):
        # Each hanging attempt takes 30 s to time out; the healthy endpoint gets everything
        # well before even one has.
        wait_until(lambda: len(receiver.at("/ok")) == 12, timeout=10, what="healthy deliveries")
        assert len(receiver.at("/hang")) <= 8  # attempts in flight per endpoint are bounded
        response = hooks.get("/v1/webhook_endpoints")
        assert response.status_code == 200


class CountedWrites:
    """A store that counts its write transactions (a dispatcher's turn is one)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def write(self, work: Any, **options: Any) -> Any:
        self.writes += 1
        return await self.store.write(work, **options)


def test_while_many_attempts_are_in_flight_dispatcher_turns_are_paced(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    """Three hanging endpoints hold 24 attempts in flight: turns then start `CROWDED_PACE`
    apart, not at every poll (20 ms here), so that delivery leaves the writers alone."""
    for i in range(3):
        receiver.always(f"/hang{i}", "hang")
        new_endpoint(hooks, receiver.url + f"/hang{i}")
    for i in range(8):
        hooks.member(f"m{i}")
    store = open_store(database_url)
    counted = CountedWrites(store)
    ledger = Ledger(counted, clock=clock, webhooks=policy())
    dispatcher, sender = dispatcher_for(ledger, timeout=30)

    async def turns_in_a_second() -> int:
        running = asyncio.create_task(dispatcher.run())
        try:
            async with asyncio.timeout(20):
                while len(receiver.received) < CROWD:
                    await asyncio.sleep(0.01)  # polling the receiver's count
            before, started = counted.writes, time.monotonic()
            await asyncio.sleep(1.0)  # the window measured
            return round((counted.writes - before) / (time.monotonic() - started))
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await sender.aclose()

    try:
        per_second = run_async(store, turns_in_a_second)
    finally:
        store.close()
    assert per_second <= round(1 / CROWDED_PACE) + 1


@pytest.mark.parametrize(
    ("answer", "status_code", "error"),
    [
        ("huge", 500, "500"),
        ("close", None, "closed the connection without an answer"),
        ("redirect", 302, "302"),
        (404, 404, "404"),
        (429, 429, "429"),
    ],
)
def test_a_receiver_that_misbehaves_is_a_failed_attempt_and_the_delivery_is_retried(
    hooks: Api,
    receiver: Receiver,
    database_url: str,
    clock: FakeClock,
    answer: Any,
    status_code: int | None,
    error: str,
) -> None:
    receiver.plan("/bad", answer)
    endpoint_id = new_endpoint(hooks, receiver.url + "/bad")["endpoint_id"]
    hooks.member("alice")
    deliver_once(database_url, clock, schedule=(0.0, 60.0))
    attempt = only_delivery(hooks, endpoint_id)
    assert (attempt["status"], attempt["attempts"], attempt["last_status_code"]) == (
        "pending",
        1,
        status_code,
    )
    assert error in attempt["last_error"]
    assert receiver.at("/elsewhere") == []  # redirects are not followed
    clock.advance(seconds=80)
    deliver_once(database_url, clock, schedule=(0.0, 60.0))
    assert only_delivery(hooks, endpoint_id)["status"] == "succeeded"


def test_a_receiver_that_does_not_answer_in_time_is_a_failed_attempt(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.plan("/slow", "hang")
    endpoint_id = new_endpoint(hooks, receiver.url + "/slow")["endpoint_id"]
    hooks.member("alice")
    deliver_once(database_url, clock, timeout=0.5, schedule=(0.0, 60.0))
    attempt = only_delivery(hooks, endpoint_id)
    assert (attempt["status"], attempt["last_status_code"]) == ("pending", None)
    assert "no answer within 0.5 s" in attempt["last_error"]


# Disabling


def test_410_gone_disables_the_endpoint_until_it_is_enabled_again(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.plan("/gone", 410)
    endpoint_id = new_endpoint(hooks, receiver.url + "/gone")["endpoint_id"]
    hooks.member("alice")
    deliver_once(database_url, clock)
    assert only_delivery(hooks, endpoint_id)["status"] == "failed"
    assert only_delivery(hooks, endpoint_id)["attempts"] == 1
    one = f"/v1/webhook_endpoints/{endpoint_id}"
    assert hooks.get(one).json()["data"]["enabled"] is False

    hooks.member("bob")  # while disabled: not delivered
    deliver_once(database_url, clock)
    assert len(receiver.at("/gone")) == 1
    assert hooks.patch(one, {"enabled": True}).json()["data"]["enabled"] is True
    hooks.member("carol")
    deliver_once(database_url, clock)
    assert [json.loads(r.body)["data"]["member_id"] for r in receiver.at("/gone")] == [
        "alice",
        "carol",
    ]


def test_an_endpoint_failing_for_5_days_without_a_success_is_disabled(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.always("/down", 503)
    endpoint_id = new_endpoint(hooks, receiver.url + "/down")["endpoint_id"]
    one = f"/v1/webhook_endpoints/{endpoint_id}"
    schedule = (0.0, *[86_400.0] * 9)
    hooks.member("alice")
    deliver_once(database_url, clock, schedule=schedule)
    for _ in range(3):
        clock.advance(days=1.25)  # past a day plus the most jitter can add
        deliver_once(database_url, clock, schedule=schedule)
    assert hooks.get(one).json()["data"]["enabled"] is True  # 3.75 days
    clock.advance(days=1.25)
    deliver_once(database_url, clock, schedule=schedule)  # 5 days since the first failure
    assert only_delivery(hooks, endpoint_id)["attempts"] == 5
    assert hooks.get(one).json()["data"]["enabled"] is False
    clock.advance(days=2)
    deliver_once(database_url, clock, schedule=schedule)
    assert only_delivery(hooks, endpoint_id)["attempts"] == 5  # a disabled endpoint is not tried


def test_a_success_restarts_the_five_days(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.plan("/flaky", 500, 500, 500, 200)
    receiver.always("/flaky", 500)
    endpoint_id = new_endpoint(hooks, receiver.url + "/flaky")["endpoint_id"]
    schedule = (0.0, *[86_400.0] * 9)
    hooks.member("alice")
    hooks.member("bob")
    deliver_once(database_url, clock, schedule=schedule)  # both fail: day 0
    for _ in range(4):
        clock.advance(days=1.25)
        deliver_once(database_url, clock, schedule=schedule)  # one success on day 1.25
    one = f"/v1/webhook_endpoints/{endpoint_id}"
    assert hooks.get(one).json()["data"]["enabled"] is True  # 5 days, but not without a success


# Bad input


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "http:///no-host"}, "url"),
        ({"url": "https://8.8.8.8/" + "a" * 2048}, "url"),
        ({"url": 42}, "url"),
        ({}, "url"),
        ({"url": "https://8.8.8.8/hook", "events": ["member.exploded"]}, "events"),
        ({"url": "https://8.8.8.8/hook", "events": []}, "events"),
        ({"url": "https://8.8.8.8/hook", "events": ["*", "member.created"]}, "events"),
        ({"url": "https://8.8.8.8/hook", "description": "d" * 501}, "description"),
        ({"url": "https://8.8.8.8/hook", "secret": "whsec_mine"}, "secret"),
    ],
)
def test_bad_endpoints_are_refused_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    assert field_of(api.post("/v1/webhook_endpoints", body)) == field
    assert api.get("/v1/webhook_endpoints").json()["meta"]["total"] == 0


def test_bad_queries_and_unknown_ids_are_refused(api: Api) -> None:
    endpoint_id = api.post("/v1/webhook_endpoints", {"url": "https://8.8.8.8/h"}).json()["data"][
        "endpoint_id"
    ]
    response = api.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", status="lost")
    assert field_of(response) == "status"
    recover = api.post(f"/v1/webhook_endpoints/{endpoint_id}/recover", {"since": "yesterday"})
    assert field_of(recover) == "since"
    for path in [
        "/v1/webhook_endpoints/we_01NOSUCHENDPOINT",
        "/v1/webhook_endpoints/we_01NOSUCHENDPOINT/deliveries",
    ]:
        missing = api.get(path)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    retry = api.post(f"/v1/webhook_endpoints/{endpoint_id}/deliveries/dlv_01NOSUCH/retry")
    assert retry.status_code == 404 and retry.json()["error"]["code"] == "not_found"
    deleted = api.client.delete(f"/v1/webhook_endpoints/{endpoint_id}", headers=api.headers())
    assert deleted.status_code == 200 and deleted.json()["data"]["deleted"] is True
    assert api.get(f"/v1/webhook_endpoints/{endpoint_id}").status_code == 404


# Retention and metrics


def test_the_sweep_drops_events_and_finished_deliveries_past_the_retention_period(
    hooks: Api, receiver: Receiver, database_url: str, clock: FakeClock
) -> None:
    receiver.plan("/hook", 200, 500)
    receiver.always("/hook", 500)
    endpoint_id = new_endpoint(hooks, receiver.url + "/hook")["endpoint_id"]
    hooks.member("alice")
    hooks.member("bob")
    deliver_once(database_url, clock, schedule=(0.0, 86_400.0 * 60))
    assert sorted(d["status"] for d in deliveries(hooks, endpoint_id)) == ["pending", "succeeded"]
    clock.advance(days=31)
    report = sweep_now(hooks.store, clock=clock, webhooks=WebhookPolicy(retention=ONE_MONTH))
    assert (report.purged_events, report.purged_deliveries) == (2, 1)
    assert [d["status"] for d in deliveries(hooks, endpoint_id)] == ["pending"]
    assert feed(hooks.store) == {}


def test_metrics_count_deliveries_by_outcome_from_the_servers_own_dispatcher(
    store: Store, receiver: Receiver, clock: FakeClock
) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    settings = {
        "webhooks_allow_private": True,
        "webhooks_poll_seconds": 0.02,
        "webhooks_retry_schedule": (0.0, 0.0),
    }
    with serve_app(store, clock=clock, **settings) as client:
        api = Api(client, key, store=store, clock=clock)
        receiver.plan("/hook", 500)
        endpoint_id = new_endpoint(api, receiver.url + "/hook")["endpoint_id"]
        api.member("alice")
        wait_until(
            lambda: [d["status"] for d in deliveries(api, endpoint_id)] == ["succeeded"],
            timeout=10,
            what="the server's dispatcher to deliver",
        )
        text = client.get("/metrics").text
    assert 'tally_webhook_deliveries_total{outcome="succeeded"} 1.0' in text
    assert 'tally_webhook_deliveries_total{outcome="retried"} 1.0' in text
    assert "tally_webhook_oldest_pending_seconds" in text


ONE_MONTH = WebhookPolicy().retention
