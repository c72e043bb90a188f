"""Who did it (api.md section 9): every ledger row records the key that made it.

`created_by` is the public id of the API key whose request wrote the row (`key_…`), or `system`
for a row time made (an expiry), in the history, the transaction and its event. Every test runs
on each backend; the `api` fixture checks `tally verify` afterwards.
"""

from __future__ import annotations

from typing import Any

from tally.domain import Scope
from tally.maintenance import create_key
from tests.ledger_support import full_history, move_to, stamp, sweep, transaction
from tests.support import Api, FakeClock
from tests.test_events import poll


def key_id(api: Api, secret: str | None = None) -> str:
    """The public id of the key `secret` (the fixture's own by default), as `tally keys list`
    shows it."""
    secret = secret or api.key
    keys = api.store.transact(lambda tx: tx.keys.all())
    (found,) = [k.id for k in keys if secret.startswith(k.prefix)]
    return found


def makers(api: Api, member_id: str) -> list[tuple[str, str]]:
    """(type, created_by) of each of the member's rows, newest first."""
    return [(row["type"], row["created_by"]) for row in full_history(api, member_id)]


def test_every_row_a_key_writes_names_that_key(api: Api) -> None:
    me = key_id(api)
    assert me.startswith("key_")
    api.member("a")
    api.member("b")
    award_id = api.award("a", 100)["transaction_id"]
    assert api.deduct("a", 10).status_code == 201
    reversed_ = api.post(
        f"/v1/transactions/{award_id}/reverse", {"reason": "returned", "points": 5}
    )
    assert reversed_.status_code == 201, reversed_.text
    assert reversed_.json()["data"]["created_by"] == me
    moved = api.post(
        "/v1/points/transfer",
        {"from_member_id": "a", "to_member_id": "b", "points": 20, "reason": "gift"},
    )
    assert moved.status_code == 201, moved.text
    assert moved.json()["data"]["from"]["created_by"] == me
    assert moved.json()["data"]["to"]["created_by"] == me
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 30}).json()["data"]
    redeemed = api.post("/v1/redemptions", {"member_id": "a", "reward_id": reward["reward_id"]})
    assert redeemed.status_code == 201, redeemed.text
    cancelled = api.post(f"/v1/redemptions/{redeemed.json()['data']['redemption_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text

    assert makers(api, "a") == [
        ("refund", me),
        ("redeem", me),
        ("transfer_out", me),
        ("reversal", me),
        ("deduct", me),
        ("award", me),
    ]
    assert makers(api, "b") == [("transfer_in", me)]
    # The same in each transaction alone, and in the data of each transaction.created event.
    for row in full_history(api, "a"):
        assert transaction(api, row["transaction_id"])["created_by"] == me
    created = poll(api, type="transaction.created")
    assert len(created) == 7
    assert {event["data"]["created_by"] for event in created} == {me}


def test_a_second_keys_writes_carry_its_own_id(api: Api, clock: FakeClock) -> None:
    other = create_key(api.store, program="acme", scope=Scope.WRITE, now=clock())
    assert other.key_id != key_id(api)
    api.member("a")
    api.award("a", 50)
    response = api.post(
        "/v1/points/award",
        {"member_id": "a", "points": 5, "reason": "by the other key"},
        key=other.secret,
    )
    assert response.status_code == 201, response.text
    deducted = api.post(
        "/v1/points/deduct", {"member_id": "a", "points": 3, "reason": "r"}, key=other.secret
    )
    assert deducted.status_code == 201, deducted.text
    assert makers(api, "a") == [
        ("deduct", other.key_id),
        ("award", other.key_id),
        ("award", key_id(api)),
    ]


def test_a_read_key_reading_sees_who_wrote_not_who_reads(api: Api, clock: FakeClock) -> None:
    reader = create_key(api.store, program="acme", scope=Scope.READ, now=clock())
    api.member("a")
    made = api.award("a", 5)
    response = api.get(f"/v1/transactions/{made['transaction_id']}", key=reader.secret)
    assert response.json()["data"]["created_by"] == key_id(api)


def test_bulk_awards_name_the_key_on_every_row(api: Api) -> None:
    api.member("a")
    api.member("b")
    awards: list[dict[str, Any]] = [
        {"member_id": member, "points": 1 + i, "reason": "bulk"}
        for i, member in enumerate(["a", "b", "a", "ghost"])
    ]
    response = api.post("/v1/points/award/bulk", {"awards": awards})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["processed"] == 3
    assert makers(api, "a") == [("award", key_id(api))] * 2
    assert makers(api, "b") == [("award", key_id(api))]


def test_an_expiry_is_made_by_system_even_when_a_keys_write_brings_it_about(
    api: Api, clock: FakeClock
) -> None:
    api.member("a")
    api.award("a", 40, expires_at=stamp("2026-02-01"))
    api.award("a", 10)
    move_to(clock, "2026-02-02")
    # This deduct catches the member up first: the expiry is time's doing, not the key's.
    assert api.deduct("a", 5).status_code == 201
    assert makers(api, "a") == [
        ("deduct", key_id(api)),
        ("expire", "system"),
        ("award", key_id(api)),
        ("award", key_id(api)),
    ]


def test_a_sweep_expires_as_system_and_a_matured_award_keeps_the_key_that_made_it(
    api: Api, clock: FakeClock
) -> None:
    api.member("a")
    later = api.award("a", 30, available_at=stamp("2026-01-10"), expires_at=stamp("2026-03-01"))
    move_to(clock, "2026-03-02")
    sweep(api.store, clock)  # posts the award on 2026-01-10, expires it on 2026-03-01
    rows = full_history(api, "a")
    assert [(r["type"], r["status"], r["created_by"]) for r in rows] == [
        ("expire", "posted", "system"),
        ("award", "posted", key_id(api)),
    ]
    assert rows[1]["transaction_id"] == later["transaction_id"]
    posted = poll(api, type="transaction.posted")
    assert [event["data"]["created_by"] for event in posted] == [key_id(api)]
    expired = [e for e in poll(api, type="transaction.created") if e["data"]["type"] == "expire"]
    assert [event["data"]["created_by"] for event in expired] == ["system"]


def test_a_cancelled_pending_award_still_names_the_key_that_made_it(
    api: Api, clock: FakeClock
) -> None:
    other = create_key(api.store, program="acme", scope=Scope.WRITE, now=clock())
    api.member("a")
    later = api.award("a", 30, available_at=stamp("2026-01-10"))
    response = api.post(f"/v1/transactions/{later['transaction_id']}/cancel", key=other.secret)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["created_by"] == key_id(api)
