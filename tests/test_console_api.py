"""The two routes the console needed that the API did not have, public like every other:
a member's open lots (`GET /v1/members/{id}/lots`) and the calling key (`GET /v1/keys/current`).
"""

from __future__ import annotations

from typing import Any

from tally.domain import Scope
from tally.maintenance import create_key
from tally.ports import Store
from tests.support import Api, FakeClock, serve_app


def lots(api: Api, member_id: str, *, key: str | None = None, **params: Any) -> list[Any]:
    response = api.get(f"/v1/members/{member_id}/lots", key=key, **params)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def remaining_and_expiry(found: list[Any]) -> list[tuple[int, str | None]]:
    return [(lot["remaining"], lot["expires_at"]) for lot in found]


# GET /v1/members/{member_id}/lots


def test_lots_are_listed_soonest_expiring_first_and_never_expiring_last(api: Api) -> None:
    api.member("m")
    never = api.award("m", 50)
    late = api.award("m", 30, expires_at="2026-12-31T00:00:00Z")
    soon = api.award("m", 20, expires_at="2026-03-01T00:00:00Z")

    found = lots(api, "m")

    assert found == [
        {
            "lot_id": soon["transaction_id"],
            "transaction_id": soon["transaction_id"],
            "remaining": 20,
            "expires_at": "2026-03-01T00:00:00Z",
        },
        {
            "lot_id": late["transaction_id"],
            "transaction_id": late["transaction_id"],
            "remaining": 30,
            "expires_at": "2026-12-31T00:00:00Z",
        },
        {
            "lot_id": never["transaction_id"],
            "transaction_id": never["transaction_id"],
            "remaining": 50,
            "expires_at": None,
        },
    ]
    assert sum(lot["remaining"] for lot in found) == api.balance("m")["balance"]


def test_a_spend_shrinks_the_soonest_lot_and_an_emptied_lot_is_no_longer_listed(api: Api) -> None:
    api.member("m")
    api.award("m", 20, expires_at="2026-03-01T00:00:00Z")
    api.award("m", 30, expires_at="2026-12-31T00:00:00Z")
    assert api.deduct("m", 25).status_code == 201

    assert remaining_and_expiry(lots(api, "m")) == [(25, "2026-12-31T00:00:00Z")]


def test_pending_points_have_no_lot_until_they_post_and_expired_ones_leave(
    api: Api, clock: FakeClock
) -> None:
    api.member("m")
    api.award("m", 10, expires_at="2026-01-10T00:00:00Z")
    pending = api.award("m", 40, available_at="2026-02-01T00:00:00Z")
    assert remaining_and_expiry(lots(api, "m")) == [(10, "2026-01-10T00:00:00Z")]

    clock.advance(days=40)  # past the expiry and the availability: the read applies both

    found = lots(api, "m")
    assert [(lot["transaction_id"], lot["remaining"]) for lot in found] == [
        (pending["transaction_id"], 40)
    ]


def test_a_transfer_gives_the_receiver_lots_that_name_its_transfer_in(api: Api) -> None:
    api.member("giver")
    api.member("taker")
    api.award("giver", 100, expires_at="2026-06-30T00:00:00Z")
    body = {"from_member_id": "giver", "to_member_id": "taker", "points": 60, "reason": "gift"}
    transfer = api.post("/v1/points/transfer", body).json()["data"]

    [lot] = lots(api, "taker")

    assert lot["transaction_id"] == transfer["to"]["transaction_id"]
    assert (lot["remaining"], lot["expires_at"]) == (60, "2026-06-30T00:00:00Z")
    assert remaining_and_expiry(lots(api, "giver")) == [(40, "2026-06-30T00:00:00Z")]


def test_lots_are_paged_like_every_list(api: Api) -> None:
    api.member("m")
    for day in range(1, 6):
        api.award("m", day, expires_at=f"2026-03-0{day}T00:00:00Z")

    response = api.get("/v1/members/m/lots", page=2, per_page=2)

    assert response.json()["meta"] == {"page": 2, "per_page": 2, "total": 5, "total_pages": 3}
    assert [lot["remaining"] for lot in response.json()["data"]] == [3, 4]
    assert lots(api, "m", page=4, per_page=2) == []
    assert api.get("/v1/members/m/lots", per_page=101).json()["error"]["code"] == (
        "validation_error"
    )


def test_a_member_with_no_lots_has_an_empty_list(api: Api) -> None:
    api.member("m")
    response = api.get("/v1/members/m/lots")
    assert response.json() == {
        "success": True,
        "data": [],
        "meta": {"page": 1, "per_page": 20, "total": 0, "total_pages": 0},
    }


def test_a_read_key_may_list_lots(api: Api) -> None:
    api.member("m")
    api.award("m", 5)
    reader = api.key_for("acme", Scope.READ)
    assert remaining_and_expiry(lots(api, "m", key=reader)) == [(5, None)]


def test_another_programs_member_has_no_lots_as_if_it_did_not_exist(api: Api) -> None:
    api.member("alice")
    api.award("alice", 100)
    other = api.key_for("other")

    theirs = api.get("/v1/members/alice/lots", key=other)
    nobody = api.get("/v1/members/nobody/lots", key=other)

    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["error"]["code"] == "member_not_found"
    assert theirs.json()["error"]["message"].replace("alice", "X") == (
        nobody.json()["error"]["message"].replace("nobody", "X")
    )


# GET /v1/keys/current


def test_the_current_key_names_its_id_scope_and_program(store: Store, clock: FakeClock) -> None:
    writer = create_key(store, program="acme", scope=Scope.WRITE, now=clock())
    reader = create_key(store, program="acme", scope=Scope.READ, now=clock())
    other = create_key(store, program="other", scope=Scope.WRITE, now=clock())
    with serve_app(store, clock=clock) as client:
        api = Api(client, writer.secret, store=store, clock=clock)

        def current(key: str) -> Any:
            response = api.get("/v1/keys/current", key=key)
            assert response.status_code == 200, response.text
            return response.json()

        assert current(writer.secret) == {
            "success": True,
            "data": {"key_id": writer.key_id, "scope": "write", "program": "acme"},
        }
        assert current(reader.secret)["data"] == {
            "key_id": reader.key_id,
            "scope": "read",
            "program": "acme",
        }
        assert current(other.secret)["data"]["program"] == "other"
        assert writer.secret not in api.get("/v1/keys/current").text


def test_the_current_key_needs_a_key_that_works(store: Store, clock: FakeClock) -> None:
    revoked = create_key(store, program="acme", scope=Scope.WRITE, now=clock())
    with serve_app(store, clock=clock, key_cache_seconds=0) as client:
        api = Api(client, revoked.secret, store=store, clock=clock)
        assert store.transact(lambda tx: tx.keys.revoke(revoked.key_id, now=clock()))
        for key in (revoked.secret, "tally_" + "A" * 43, "not-a-key"):
            response = api.get("/v1/keys/current", key=key)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
        assert client.get("/v1/keys/current").status_code == 401
