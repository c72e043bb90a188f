"""Idempotency-Key (api.md section 2) on every POST, on every backend.

A retry with the same key and the same request gets the first answer back byte for byte, marked
`Idempotent-Replayed: true`, and changes nothing; the same key for another request is refused;
keys belong to a program; a request that failed leaves its key unused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tally.config import Settings
from tally.domain import Scope
from tally.http.app import create_app
from tally.maintenance import create_key, run_async, sweep_now
from tally.ports import Store
from tests.support import Api, FakeClock, everything

REPLAYED = "Idempotent-Replayed"


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers.get(REPLAYED) != "true"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, response.text
    return error


# Member `m` (balance 80) with two pending awards, a reward and two redemptions of it.


@dataclass(frozen=True)
class World:
    pending: tuple[str, str]
    reward: str
    redemptions: tuple[str, str]


@pytest.fixture
def world(api: Api) -> World:
    api.member("m")
    api.award("m", 100)
    later = "2026-02-01T00:00:00Z"
    pending = [api.award("m", p, available_at=later)["transaction_id"] for p in (7, 8)]
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10})
    assert reward.status_code == 201, reward.text
    reward_id = reward.json()["data"]["reward_id"]
    redemptions = []
    for _ in range(2):
        made = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward_id})
        assert made.status_code == 201, made.text
        redemptions.append(made.json()["data"]["redemption_id"])
    return World((pending[0], pending[1]), reward_id, (redemptions[0], redemptions[1]))


Request = tuple[str, Any]  # a POST: path and JSON body (None for no body)
AWARD = {"member_id": "m", "points": 25, "reason": "retry me"}

# Each POST route: a request, and another request for the same route that must not be
# mistaken for it.
OPERATIONS: dict[str, tuple[Callable[[World], Request], Callable[[World], Request]]] = {
    "award": (
        lambda w: ("/v1/points/award", AWARD),
        lambda w: ("/v1/points/award", {**AWARD, "points": 26}),
    ),
    "bulk award": (
        lambda w: ("/v1/points/award/bulk", {"awards": [AWARD, AWARD]}),
        lambda w: ("/v1/points/award/bulk", {"awards": [AWARD]}),
    ),
    "deduct": (
        lambda w: ("/v1/points/deduct", {"member_id": "m", "points": 10, "reason": "fix"}),
        lambda w: ("/v1/points/deduct", {"member_id": "m", "points": 11, "reason": "fix"}),
    ),
    "enrol a member": (
        lambda w: ("/v1/members", {"member_id": "newcomer", "name": "New"}),
        lambda w: ("/v1/members", {"member_id": "newcomer", "name": "Other"}),
    ),
    "enrol a member with a generated id": (
        lambda w: ("/v1/members", {"name": "Anonymous"}),
        lambda w: ("/v1/members", {"name": "Someone else"}),
    ),
    "add a reward": (
        lambda w: ("/v1/rewards", {"name": "Cap", "points_cost": 20, "stock": 3}),
        lambda w: ("/v1/rewards", {"name": "Cup", "points_cost": 20, "stock": 3}),
    ),
    "redeem": (
        lambda w: ("/v1/redemptions", {"member_id": "m", "reward_id": w.reward}),
        lambda w: ("/v1/redemptions", {"member_id": "m", "reward_id": w.reward, "quantity": 2}),
    ),
    "cancel a pending award": (
        lambda w: (f"/v1/transactions/{w.pending[0]}/cancel", None),
        lambda w: (f"/v1/transactions/{w.pending[1]}/cancel", None),
    ),
    "cancel a redemption": (
        lambda w: (f"/v1/redemptions/{w.redemptions[0]}/cancel", None),
        lambda w: (f"/v1/redemptions/{w.redemptions[1]}/cancel", None),
    ),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_replay_returns_the_first_answer_byte_for_byte_and_changes_nothing(
    api: Api, world: World, operation: str
) -> None:
    path, body = OPERATIONS[operation][0](world)
    first = api.post(path, body, idem="retry-1")
    assert first.status_code in (200, 201), first.text
    assert first.headers.get(REPLAYED) != "true"
    after = everything(api)
    for _ in range(2):
        replay = api.post(path, body, idem="retry-1")
        assert replay.status_code == first.status_code
        assert replay.content == first.content
        assert replay.headers.get(REPLAYED) == "true"
        assert replay.headers["content-type"].split(";")[0] == "application/json"
    assert everything(api) == after


@pytest.mark.parametrize("operation", OPERATIONS)
def test_the_same_key_for_a_different_request_is_refused_and_changes_nothing(
    api: Api, world: World, operation: str
) -> None:
    request, other = OPERATIONS[operation]
    path, body = request(world)
    first = api.post(path, body, idem="retry-1")
    assert first.status_code in (200, 201), first.text
    after = everything(api)
    other_path, other_body = other(world)
    assert_refused(api.post(other_path, other_body, idem="retry-1"), 422, "idempotency_key_reused")
    assert everything(api) == after
    replay = api.post(path, body, idem="retry-1")
    assert (replay.content, replay.headers.get(REPLAYED)) == (first.content, "true")


def test_without_a_key_a_retry_is_a_new_request(api: Api, world: World) -> None:
    first = api.post("/v1/points/award", AWARD)
    second = api.post("/v1/points/award", AWARD)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.headers.get(REPLAYED) != "true"
    assert api.balance("m")["balance"] == 80 + 25 + 25


OTHER_PATHS: dict[str, tuple[Callable[[World], Request], Callable[[World], Request]]] = {
    "award, then deduct with the same body": (
        lambda w: ("/v1/points/award", {"member_id": "m", "points": 5, "reason": "x"}),
        lambda w: ("/v1/points/deduct", {"member_id": "m", "points": 5, "reason": "x"}),
    ),
    "award, then bulk award": (
        lambda w: ("/v1/points/award", AWARD),
        lambda w: ("/v1/points/award/bulk", {"awards": [AWARD]}),
    ),
    "cancel an award, then a redemption": (
        lambda w: (f"/v1/transactions/{w.pending[0]}/cancel", None),
        lambda w: (f"/v1/redemptions/{w.redemptions[0]}/cancel", None),
    ),
    "cancel one award, then another": (
        lambda w: (f"/v1/transactions/{w.pending[0]}/cancel", None),
        lambda w: (f"/v1/transactions/{w.pending[1]}/cancel", None),
    ),
}


@pytest.mark.parametrize("case", OTHER_PATHS)
def test_the_same_key_on_a_different_path_is_refused_and_changes_nothing(
    api: Api, world: World, case: str
) -> None:
    first, then = OTHER_PATHS[case]
    path, body = first(world)
    answered = api.post(path, body, idem="shared")
    assert answered.status_code in (200, 201), answered.text
    after = everything(api)
    other_path, other_body = then(world)
    assert_refused(api.post(other_path, other_body, idem="shared"), 422, "idempotency_key_reused")
    assert everything(api) == after


def test_another_key_of_the_same_program_gets_the_replay(api: Api, world: World) -> None:
    first = api.post("/v1/points/award", AWARD, idem="retry-1")
    after = everything(api)
    second_key = api.key_for("acme")
    replay = api.post("/v1/points/award", AWARD, idem="retry-1", key=second_key)
    assert (replay.status_code, replay.content) == (first.status_code, first.content)
    assert replay.headers.get(REPLAYED) == "true"
    assert everything(api) == after


def test_keys_are_scoped_to_the_program(api: Api) -> None:
    other = api.key_for("other")
    api.member("m")
    assert api.post("/v1/members", {"member_id": "m"}, key=other).status_code == 201
    mine = api.post("/v1/points/award", AWARD, idem="order-1")
    theirs = api.post("/v1/points/award", AWARD, idem="order-1", key=other)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert theirs.headers.get(REPLAYED) != "true"
    assert theirs.json()["data"]["transaction_id"] != mine.json()["data"]["transaction_id"]
    different = api.post("/v1/points/award", {**AWARD, "points": 1}, idem="order-2", key=other)
    assert api.post("/v1/points/award", {**AWARD, "points": 2}, idem="order-2").status_code == 201
    assert different.status_code == 201
    assert api.balance("m")["balance"] == 25 + 2
    assert api.get("/v1/members/m/balance", key=other).json()["data"]["balance"] == 25 + 1


def test_a_replay_answers_what_was_answered_then_not_what_is_true_now(
    api: Api, world: World
) -> None:
    first = api.post("/v1/points/award", AWARD, idem="retry-1")
    assert first.json()["data"]["new_balance"] == 105
    api.award("m", 1000)
    replay = api.post("/v1/points/award", AWARD, idem="retry-1")
    assert replay.content == first.content
    assert replay.json()["data"]["new_balance"] == 105
    assert api.balance("m")["balance"] == 1105


def test_a_key_is_still_honoured_almost_a_day_later_even_after_a_sweep(
    api: Api, world: World, store: Store, clock: FakeClock
) -> None:
    first = api.post("/v1/points/award", AWARD, idem="retry-1")
    clock.advance(hours=23, minutes=59)
    sweep_now(store, clock=clock)
    after = everything(api)
    replay = api.post("/v1/points/award", AWARD, idem="retry-1")
    assert (replay.content, replay.headers.get(REPLAYED)) == (first.content, "true")
    assert everything(api) == after


# A request that failed stores nothing: the same key works once the cause is gone.


def _raise_the_balance(api: Api, world: World) -> None:
    api.award("m", 1000)


def _enrol_the_member(api: Api, world: World) -> None:
    api.member("late")


def _restock(api: Api, world: World) -> None:
    assert api.patch(f"/v1/rewards/{world.reward}", {"stock": 1}).status_code == 200


def _reactivate(api: Api, world: World) -> None:
    assert api.patch(f"/v1/rewards/{world.reward}", {"active": True}).status_code == 200


def _out_of_stock(api: Api, world: World) -> None:
    assert api.patch(f"/v1/rewards/{world.reward}", {"stock": 0}).status_code == 200


def _inactive(api: Api, world: World) -> None:
    assert api.patch(f"/v1/rewards/{world.reward}", {"active": False}).status_code == 200


def _nothing(api: Api, world: World) -> None:
    pass


Step = Callable[[Api, World], None]
FAILURES: dict[str, tuple[Step, Callable[[World], Request], tuple[int, str], Step]] = {
    "insufficient points": (
        _nothing,
        lambda w: ("/v1/points/deduct", {"member_id": "m", "points": 500, "reason": "fix"}),
        (422, "insufficient_points"),
        _raise_the_balance,
    ),
    "an unknown member": (
        _nothing,
        lambda w: ("/v1/points/award", {"member_id": "late", "points": 5, "reason": "x"}),
        (404, "member_not_found"),
        _enrol_the_member,
    ),
    "out of stock": (
        _out_of_stock,
        lambda w: ("/v1/redemptions", {"member_id": "m", "reward_id": w.reward}),
        (422, "out_of_stock"),
        _restock,
    ),
    "an inactive reward": (
        _inactive,
        lambda w: ("/v1/redemptions", {"member_id": "m", "reward_id": w.reward}),
        (422, "reward_inactive"),
        _reactivate,
    ),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_request_that_failed_stores_nothing_so_a_retry_with_its_key_can_succeed(
    api: Api, world: World, failure: str
) -> None:
    arrange, request, (status, code), fix = FAILURES[failure]
    arrange(api, world)
    path, body = request(world)
    assert_refused(api.post(path, body, idem="retry-1"), status, code)
    fix(api, world)
    retried = api.post(path, body, idem="retry-1")
    assert retried.status_code == 201, retried.text
    assert retried.headers.get(REPLAYED) != "true"
    replay = api.post(path, body, idem="retry-1")
    assert (replay.content, replay.headers.get(REPLAYED)) == (retried.content, "true")


def test_after_a_refused_request_the_key_is_free_for_another_request(
    api: Api, world: World
) -> None:
    refused = api.post("/v1/points/award", {**AWARD, "points": 0}, idem="retry-1")
    assert_refused(refused, 422, "validation_error")
    again = api.post("/v1/points/award", {**AWARD, "points": 0}, idem="retry-1")
    assert_refused(again, 422, "validation_error")
    corrected = api.post("/v1/points/award", AWARD, idem="retry-1")
    assert corrected.status_code == 201, corrected.text
    assert api.balance("m")["balance"] == 80 + 25


# The header itself: 1 to 255 printable ASCII characters.

BAD_KEYS: dict[str, str | bytes] = {
    "256 characters": "k" * 256,
    "empty": "",
    "a tab": "retry\t1",
    "a bell character": "retry\x071",
    "DEL": "retry\x7f",
    "non-ASCII letters": "повтор-1".encode(),
    "an emoji": "retry-😀".encode(),
}


@pytest.mark.parametrize("bad_key", BAD_KEYS.values(), ids=list(BAD_KEYS))
def test_a_malformed_idempotency_key_is_a_validation_error_and_changes_nothing(
    api: Api, world: World, bad_key: str | bytes
) -> None:
    before = everything(api)
    for path, body in (
        ("/v1/points/award", AWARD),
        ("/v1/members", {"member_id": "newcomer"}),
        (f"/v1/transactions/{world.pending[0]}/cancel", None),
    ):
        headers: dict[str, Any] = {**api.headers(), "Idempotency-Key": bad_key}
        response = api.client.post(path, json=body, headers=headers)
        error = assert_refused(response, 422, "validation_error")
        assert "Idempotency-Key" in [d.get("field") for d in error.get("details", [])], path
    assert everything(api) == before


GOOD_KEYS = {
    "255 characters": "k" * 255,
    "one character": "k",
    "a UUID": "550e8400-e29b-41d4-a716-446655440000",
    "spaces and punctuation": "order 42 / try #1 ~!",
}


@pytest.mark.parametrize("good_key", GOOD_KEYS.values(), ids=list(GOOD_KEYS))
def test_any_printable_ascii_key_up_to_255_characters_works(
    api: Api, world: World, good_key: str
) -> None:
    first = api.post("/v1/points/award", AWARD, idem=good_key)
    assert first.status_code == 201, first.text
    replay = api.post("/v1/points/award", AWARD, idem=good_key)
    assert (replay.content, replay.headers.get(REPLAYED)) == (first.content, "true")
    assert api.balance("m")["balance"] == 80 + 25


# Same key while the first request is still running: 409, or the replay; never a second effect.


def test_concurrent_duplicates_are_in_progress_or_replays_and_apply_once(
    store: Store, clock: FakeClock
) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    app = create_app(store, settings=Settings(sweep_interval=0), clock=clock)
    auth = {"Authorization": f"Bearer {key}"}
    body = {"awards": [{"member_id": "m", "points": 1, "reason": "bulk"}] * 2000}

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tally") as client:
            enrolled = await client.post("/v1/members", json={"member_id": "m"}, headers=auth)
            assert enrolled.status_code == 201, enrolled.text
            headers = {**auth, "Idempotency-Key": "batch-1"}
            responses = await asyncio.gather(
                *[
                    client.post("/v1/points/award/bulk", json=body, headers=headers)
                    for _ in range(4)
                ]
            )
            balance = await client.get("/v1/members/m/balance", headers=auth)
        return list(responses), balance

    responses, balance = run_async(store, scenario)
    originals = [r for r in responses if r.status_code == 200 and r.headers.get(REPLAYED) != "true"]
    assert len(originals) == 1, [r.text[:200] for r in responses]
    for response in responses:
        if response is originals[0]:
            continue
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "idempotency_in_progress"
        else:
            assert response.headers.get(REPLAYED) == "true", response.text[:200]
            assert response.content == originals[0].content
    assert balance.json()["data"]["balance"] == 2000
