"""Programs are sealed from each other (api.md sections 1 and 2).

Program B's key never sees, touches or learns of program A's members, transactions, rewards,
redemptions or idempotency keys: every request B makes about A's objects is answered exactly as
if the object did not exist at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tally.domain import Scope
from tests.support import Api, everything

A_ONLY_MEMBER = "alice"  # exists in program A only
NOBODY = "nobody"  # exists nowhere
MISSING_TXN = "txn_01NOSUCHTRANSACTION0000000"
MISSING_RWD = "rwd_01NOSUCHREWARD000000000000"
MISSING_RED = "red_01NOSUCHREDEMPTION00000000"


@dataclass(frozen=True)
class Programs:
    """Program A (`acme`, the `api` fixture's key) and program B (`other`), one of each object."""

    b_key: str
    a_posted: str
    a_pending: str
    a_reward: str
    a_redemption: str
    b_reward: str


@pytest.fixture
def programs(api: Api) -> Programs:
    b_key = api.key_for("other")
    api.member(A_ONLY_MEMBER)
    a_posted = api.award(A_ONLY_MEMBER, 100)["transaction_id"]
    a_pending = api.award(A_ONLY_MEMBER, 40, available_at="2026-02-01T00:00:00Z")
    a_reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10}).json()["data"]
    a_redemption = api.post(
        "/v1/redemptions", {"member_id": A_ONLY_MEMBER, "reward_id": a_reward["reward_id"]}
    ).json()["data"]
    assert api.post("/v1/members", {"member_id": "bob"}, key=b_key).status_code == 201
    assert api.post(
        "/v1/points/award", {"member_id": "bob", "points": 50, "reason": "x"}, key=b_key
    ).is_success
    b_reward = api.post("/v1/rewards", {"name": "Cap", "points_cost": 10}, key=b_key)
    return Programs(
        b_key=b_key,
        a_posted=a_posted,
        a_pending=a_pending["transaction_id"],
        a_reward=a_reward["reward_id"],
        a_redemption=a_redemption["redemption_id"],
        b_reward=b_reward.json()["data"]["reward_id"],
    )


Request = tuple[str, str, Any]
AWARD = {"points": 5, "reason": "x"}


def a_member(p: Programs) -> str:
    return A_ONLY_MEMBER


# Each row: a request about the object `id`; A's object; an id that exists nowhere; the code.
Probe = tuple[Callable[[Programs, str], Request], Callable[[Programs], str], str, str]
PROBES: dict[str, Probe] = {
    "get a member": (
        lambda p, id: ("GET", f"/v1/members/{id}", None),
        a_member,
        NOBODY,
        "member_not_found",
    ),
    "get a balance": (
        lambda p, id: ("GET", f"/v1/members/{id}/balance", None),
        a_member,
        NOBODY,
        "member_not_found",
    ),
    "get a history": (
        lambda p, id: ("GET", f"/v1/members/{id}/transactions", None),
        a_member,
        NOBODY,
        "member_not_found",
    ),
    "list a member's redemptions": (
        lambda p, id: ("GET", f"/v1/members/{id}/redemptions", None),
        a_member,
        NOBODY,
        "member_not_found",
    ),
    "award to a member": (
        lambda p, id: ("POST", "/v1/points/award", {"member_id": id, **AWARD}),
        a_member,
        NOBODY,
        "member_not_found",
    ),
    "deduct from a member": (
        lambda p, id: ("POST", "/v1/points/deduct", {"member_id": id, **AWARD}),
        a_member,
        NOBODY,
        "member_not_found",
    ),
    "redeem for a member": (
        lambda p, id: ("POST", "/v1/redemptions", {"member_id": id, "reward_id": p.b_reward}),
        a_member,
        NOBODY,
        "member_not_found",
    ),
    "get a transaction": (
        lambda p, id: ("GET", f"/v1/transactions/{id}", None),
        lambda p: p.a_posted,
        MISSING_TXN,
        "transaction_not_found",
    ),
    "cancel a pending award": (
        lambda p, id: ("POST", f"/v1/transactions/{id}/cancel", None),
        lambda p: p.a_pending,
        MISSING_TXN,
        "transaction_not_found",
    ),
    "cancel a posted award": (
        lambda p, id: ("POST", f"/v1/transactions/{id}/cancel", None),
        lambda p: p.a_posted,
        MISSING_TXN,
        "transaction_not_found",
    ),
    "get a reward": (
        lambda p, id: ("GET", f"/v1/rewards/{id}", None),
        lambda p: p.a_reward,
        MISSING_RWD,
        "reward_not_found",
    ),
    "change a reward": (
        lambda p, id: ("PATCH", f"/v1/rewards/{id}", {"active": False}),
        lambda p: p.a_reward,
        MISSING_RWD,
        "reward_not_found",
    ),
    "redeem a reward": (
        lambda p, id: ("POST", "/v1/redemptions", {"member_id": "bob", "reward_id": id}),
        lambda p: p.a_reward,
        MISSING_RWD,
        "reward_not_found",
    ),
    "get a redemption": (
        lambda p, id: ("GET", f"/v1/redemptions/{id}", None),
        lambda p: p.a_redemption,
        MISSING_RED,
        "redemption_not_found",
    ),
    "cancel a redemption": (
        lambda p, id: ("POST", f"/v1/redemptions/{id}/cancel", None),
        lambda p: p.a_redemption,
        MISSING_RED,
        "redemption_not_found",
    ),
}


def send(api: Api, request: Request, key: str) -> httpx.Response:
    method, path, body = request
    return api.client.request(method, path, json=body, headers=api.headers(key))


def anonymised(response: httpx.Response, id: str) -> tuple[int, Any]:
    """Status and body with the id that was asked about blanked, so two answers compare."""
    return response.status_code, json.loads(response.text.replace(id, "<id>"))


@pytest.mark.parametrize("probe", PROBES)
def test_another_programs_object_is_answered_exactly_like_a_missing_one(
    api: Api, programs: Programs, probe: str
) -> None:
    request, theirs_of, missing, code = PROBES[probe]
    theirs_id = theirs_of(programs)
    a_before = everything(api)
    b_before = everything(api, key=programs.b_key)
    theirs = send(api, request(programs, theirs_id), programs.b_key)
    nothing = send(api, request(programs, missing), programs.b_key)
    assert (theirs.status_code, theirs.json()["error"]["code"]) == (404, code), theirs.text
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (404, code), nothing.text
    assert anonymised(theirs, theirs_id) == anonymised(nothing, missing)
    assert everything(api) == a_before
    assert everything(api, key=programs.b_key) == b_before


def test_a_read_key_of_another_program_sees_nothing_either(api: Api, programs: Programs) -> None:
    b_reader = api.key_for("other", Scope.READ)
    for path, code in (
        (f"/v1/members/{A_ONLY_MEMBER}/balance", "member_not_found"),
        (f"/v1/transactions/{programs.a_posted}", "transaction_not_found"),
        (f"/v1/rewards/{programs.a_reward}", "reward_not_found"),
        (f"/v1/redemptions/{programs.a_redemption}", "redemption_not_found"),
    ):
        response = api.get(path, key=b_reader)
        assert (response.status_code, response.json()["error"]["code"]) == (404, code)


def test_the_same_member_id_lives_in_both_programs_with_independent_balances(api: Api) -> None:
    b_key = api.key_for("other")
    api.member("shared", name="A's Sam")
    enrolled = api.post("/v1/members", {"member_id": "shared", "name": "B's Sam"}, key=b_key)
    assert enrolled.status_code == 201, enrolled.text
    api.award("shared", 100)
    b_award = {"member_id": "shared", "points": 7, "reason": "x"}
    assert api.post("/v1/points/award", b_award, key=b_key).status_code == 201
    too_much = {"member_id": "shared", "points": 50, "reason": "x"}
    refused = api.post("/v1/points/deduct", too_much, key=b_key)
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "insufficient_points")
    assert api.deduct("shared", 50).status_code == 201
    b_balance = api.get("/v1/members/shared/balance", key=b_key).json()["data"]
    assert (api.balance("shared")["balance"], b_balance["balance"]) == (50, 7)
    b_history = api.get("/v1/members/shared/transactions", key=b_key).json()["data"]
    assert [row["points"] for row in api.history("shared")] == [-50, 100]
    assert [row["points"] for row in b_history] == [7]
    assert api.get("/v1/members/shared").json()["data"]["name"] == "A's Sam"
    b_member = api.get("/v1/members/shared", key=b_key).json()["data"]
    assert b_member["name"] == "B's Sam"


def test_listing_members_shows_only_your_own(api: Api) -> None:
    b_key = api.key_for("other")
    for member in ("a1", "a2", "a3"):
        api.member(member)
    assert api.post("/v1/members", {"member_id": "b1"}, key=b_key).status_code == 201
    mine = api.get("/v1/members").json()
    theirs = api.get("/v1/members", key=b_key).json()
    assert [m["member_id"] for m in mine["data"]] == ["a1", "a2", "a3"]
    assert mine["meta"]["total"] == 3
    assert [m["member_id"] for m in theirs["data"]] == ["b1"]
    assert theirs["meta"]["total"] == 1


def test_listing_rewards_shows_only_your_own(api: Api, programs: Programs) -> None:
    mine = api.get("/v1/rewards").json()
    theirs = api.get("/v1/rewards", key=programs.b_key).json()
    assert [r["reward_id"] for r in mine["data"]] == [programs.a_reward]
    assert [r["reward_id"] for r in theirs["data"]] == [programs.b_reward]
    assert (mine["meta"]["total"], theirs["meta"]["total"]) == (1, 1)


def test_each_program_has_its_own_settings(api: Api) -> None:
    b_key = api.key_for("other")
    assert api.patch("/v1/program", {"points_expire_after_days": 30}).status_code == 200
    mine = api.get("/v1/program").json()["data"]
    theirs = api.get("/v1/program", key=b_key).json()["data"]
    assert (mine["name"], mine["points_expire_after_days"]) == ("acme", 30)
    assert (theirs["name"], theirs["points_expire_after_days"]) == ("other", None)


def test_a_bulk_award_cannot_reach_another_programs_member(api: Api, programs: Programs) -> None:
    a_before = everything(api)
    response = api.post(
        "/v1/points/award/bulk",
        {
            "awards": [
                {"member_id": "bob", "points": 5, "reason": "x"},
                {"member_id": A_ONLY_MEMBER, "points": 5, "reason": "x"},
            ]
        },
        key=programs.b_key,
    )
    data = response.json()["data"]
    assert (data["processed"], data["failed"]) == (1, 1)
    assert [(e["index"], e["error"]["code"]) for e in data["errors"]] == [(1, "member_not_found")]
    assert everything(api) == a_before


def test_idempotency_keys_are_per_program(api: Api, programs: Programs) -> None:
    body = {"member_id": "twin", "points": 10, "reason": "x"}
    api.member("twin")
    assert api.post("/v1/members", {"member_id": "twin"}, key=programs.b_key).status_code == 201
    mine = api.post("/v1/points/award", body, idem="same-key")
    theirs = api.post("/v1/points/award", body, idem="same-key", key=programs.b_key)
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert theirs.headers.get("Idempotent-Replayed") != "true"
    assert mine.json()["data"]["transaction_id"] != theirs.json()["data"]["transaction_id"]
    assert api.post("/v1/points/award", body, idem="used-by-a").status_code == 201
    other_body = {**body, "points": 3}
    reused = api.post("/v1/points/award", other_body, idem="used-by-a", key=programs.b_key)
    assert reused.status_code == 201, "B must not learn that A used the key: " + reused.text
    assert api.balance("twin")["balance"] == 10 + 10
    b_balance = api.get("/v1/members/twin/balance", key=programs.b_key).json()["data"]
    assert b_balance["balance"] == 10 + 3
