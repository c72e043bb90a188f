"""Rewards and redemptions (spec section 6), on every backend.

The FakeClock starts at 2026-01-01T12:00Z; after every test the `api` fixture checks that
`verify` finds the ledger consistent.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from tally.commands import RedeemCommand, RedemptionResult
from tally.domain import Scope
from tally.maintenance import run_async
from tally.ports import Store
from tally.service import Ledger
from tally.storage.postgres import PostgresStore
from tally.storage.sqlite import SqliteStore
from tests.ledger_support import (
    assert_ledger_order,
    counters_add_up,
    error_code,
    full_history,
    lot_remainders,
    move_to,
    program_id,
    stamp,
    transaction,
)
from tests.support import Api, FakeClock


def new_reward(api: Api, name: str = "Coffee mug", points_cost: int = 100, **fields: Any) -> str:
    response = api.post("/v1/rewards", {"name": name, "points_cost": points_cost, **fields})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["reward_id"])


def reward(api: Api, reward_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/rewards/{reward_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def redeem(api: Api, member_id: str, reward_id: str, **fields: Any) -> httpx.Response:
    return api.post("/v1/redemptions", {"member_id": member_id, "reward_id": reward_id, **fields})


def redeemed(api: Api, member_id: str, reward_id: str, **fields: Any) -> dict[str, Any]:
    response = redeem(api, member_id, reward_id, **fields)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def cancel(api: Api, redemption_id: str, **kwargs: Any) -> httpx.Response:
    return api.post(f"/v1/redemptions/{redemption_id}/cancel", **kwargs)


def member_with(api: Api, member_id: str, points: int, **fields: Any) -> None:
    api.member(member_id)
    api.award(member_id, points, **fields)


# The catalog


def test_a_reward_is_created_with_its_defaults(api: Api) -> None:
    response = api.post("/v1/rewards", {"name": "Coffee mug", "points_cost": 120})
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["reward_id"].startswith("rwd_")
    assert {k: v for k, v in data.items() if k != "reward_id"} == {
        "name": "Coffee mug",
        "points_cost": 120,
        "stock": None,
        "active": True,
        "metadata": None,
        "created_at": "2026-01-01T12:00:00Z",
    }
    assert reward(api, data["reward_id"]) == data


def test_a_reward_is_created_with_stock_metadata_and_inactive(api: Api) -> None:
    body = {
        "name": "Tote bag",
        "points_cost": 300,
        "stock": 12,
        "active": False,
        "metadata": {"sku": "TB-1", "sizes": ["M", "L"]},
    }
    response = api.post("/v1/rewards", body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert {k: data[k] for k in body} == body
    assert reward(api, data["reward_id"]) == data


def test_rewards_are_listed_in_creation_order_with_meta(api: Api, clock: FakeClock) -> None:
    for i in range(5):
        new_reward(api, f"reward {i}", 10 + i)
        clock.advance(minutes=1)
    body = api.get("/v1/rewards", page=2, per_page=2).json()
    assert [r["name"] for r in body["data"]] == ["reward 2", "reward 3"]
    assert body["meta"] == {"page": 2, "per_page": 2, "total": 5, "total_pages": 3}
    everything = api.get("/v1/rewards").json()
    assert [r["points_cost"] for r in everything["data"]] == [10, 11, 12, 13, 14]


def test_a_patch_changes_only_the_fields_it_names(api: Api) -> None:
    reward_id = new_reward(api, "Mug", 100, stock=5, metadata={"a": 1})
    before = reward(api, reward_id)
    steps: list[dict[str, Any]] = [
        {"name": "Big mug"},
        {"points_cost": 150},
        {"stock": None},
        {"stock": 0},
        {"active": False},
        {"metadata": {"b": 2}},
        {"metadata": None},
        {},
    ]
    expected = dict(before)
    for change in steps:
        response = api.patch(f"/v1/rewards/{reward_id}", change)
        assert response.status_code == 200, (change, response.text)
        expected.update(change)
        assert response.json()["data"] == expected, change
        assert reward(api, reward_id) == expected, change


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"points_cost": 10}, "name"),
        ({"name": "", "points_cost": 10}, "name"),
        ({"name": "   ", "points_cost": 10}, "name"),
        ({"name": "x" * 201, "points_cost": 10}, "name"),
        ({"name": "Mug"}, "points_cost"),
        ({"name": "Mug", "points_cost": 0}, "points_cost"),
        ({"name": "Mug", "points_cost": -5}, "points_cost"),
        ({"name": "Mug", "points_cost": 1.5}, "points_cost"),
        ({"name": "Mug", "points_cost": "10"}, "points_cost"),
        ({"name": "Mug", "points_cost": True}, "points_cost"),
        ({"name": "Mug", "points_cost": None}, "points_cost"),
        ({"name": "Mug", "points_cost": 10, "stock": -1}, "stock"),
        ({"name": "Mug", "points_cost": 10, "stock": 1.5}, "stock"),
        ({"name": "Mug", "points_cost": 10, "stock": "3"}, "stock"),
        ({"name": "Mug", "points_cost": 10, "active": "yes"}, "active"),
        ({"name": "Mug", "points_cost": 10, "metadata": [1]}, "metadata"),
        ({"name": "Mug", "points_cost": 10, "price": 5}, "price"),
    ],
)
def test_a_bad_reward_is_refused_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    response = api.post("/v1/rewards", body)
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == field
    assert api.get("/v1/rewards").json()["meta"]["total"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "  "}, "name"),
        ({"points_cost": 0}, "points_cost"),
        ({"points_cost": None}, "points_cost"),
        ({"points_cost": 2.5}, "points_cost"),
        ({"stock": -1}, "stock"),
        ({"active": None}, "active"),
        ({"active": 1}, "active"),
        ({"price": 5}, "price"),
    ],
)
def test_a_bad_patch_is_refused_and_changes_nothing(
    api: Api, change: dict[str, Any], field: str
) -> None:
    reward_id = new_reward(api, "Mug", 100, stock=5)
    before = reward(api, reward_id)
    response = api.patch(f"/v1/rewards/{reward_id}", change)
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == field
    assert reward(api, reward_id) == before


def test_an_unknown_or_another_programs_reward_is_not_found(api: Api) -> None:
    reward_id = new_reward(api)
    other = api.key_for("other")
    for response in (
        api.get("/v1/rewards/rwd_nope"),
        api.patch("/v1/rewards/rwd_nope", {"name": "x"}),
        api.get(f"/v1/rewards/{reward_id}", key=other),
        api.patch(f"/v1/rewards/{reward_id}", {"name": "stolen"}, key=other),
    ):
        assert error_code(response) == (404, "reward_not_found")
    assert reward(api, reward_id)["name"] == "Coffee mug"
    assert api.get("/v1/rewards", key=other).json()["meta"]["total"] == 0


def test_a_read_key_sees_the_catalog_but_cannot_change_it(api: Api) -> None:
    reward_id = new_reward(api)
    reader = api.key_for("acme", Scope.READ)
    assert api.get(f"/v1/rewards/{reward_id}", key=reader).status_code == 200
    create = api.post("/v1/rewards", {"name": "x", "points_cost": 1}, key=reader)
    patch = api.patch(f"/v1/rewards/{reward_id}", {"name": "x"}, key=reader)
    assert error_code(create) == error_code(patch) == (403, "forbidden")
    assert reward(api, reward_id)["name"] == "Coffee mug"


# Redeeming


def test_a_redemption_is_one_redeem_transaction_named_after_the_reward(api: Api) -> None:
    member_with(api, "m", 500)
    reward_id = new_reward(api, "Coffee mug", 120, stock=5)
    response = redeem(api, "m", reward_id)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["redemption_id"].startswith("red_")
    assert {k: data[k] for k in ("member_id", "reward_id", "quantity", "points", "status")} == {
        "member_id": "m",
        "reward_id": reward_id,
        "quantity": 1,
        "points": 120,
        "status": "completed",
    }
    assert data["created_at"] == "2026-01-01T12:00:00Z"
    spent = transaction(api, data["transaction_id"])
    assert {k: spent[k] for k in ("type", "points", "reason", "balance_after", "member_id")} == {
        "type": "redeem",
        "points": -120,
        "reason": "Coffee mug",
        "balance_after": 380,
        "member_id": "m",
    }
    assert [r["transaction_id"] for r in api.history("m")][0] == data["transaction_id"]
    assert len(api.history("m")) == 2
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_redeemed"], balance["lifetime_earned"]) == (
        380,
        120,
        500,
    )
    assert counters_add_up(balance)
    assert reward(api, reward_id)["stock"] == 4


def test_a_redemption_of_several_costs_and_takes_that_many(api: Api) -> None:
    member_with(api, "m", 500)
    reward_id = new_reward(api, "Sticker", 40, stock=5)
    data = redeemed(api, "m", reward_id, quantity=3)
    assert (data["quantity"], data["points"]) == (3, 120)
    assert transaction(api, data["transaction_id"])["points"] == -120
    assert api.balance("m")["lifetime_redeemed"] == 120
    assert reward(api, reward_id)["stock"] == 2


def test_a_reward_without_stock_is_never_out_of_stock(api: Api) -> None:
    member_with(api, "m", 1_000)
    reward_id = new_reward(api, "Voucher", 100)
    for _ in range(3):
        redeemed(api, "m", reward_id, quantity=2)
    assert reward(api, reward_id)["stock"] is None
    assert api.balance("m")["balance"] == 400


def test_stock_never_falls_below_zero(api: Api) -> None:
    member_with(api, "m", 1_000)
    reward_id = new_reward(api, "Mug", 10, stock=2)
    assert error_code(redeem(api, "m", reward_id, quantity=3)) == (422, "out_of_stock")
    assert reward(api, reward_id)["stock"] == 2
    redeemed(api, "m", reward_id, quantity=2)
    assert reward(api, reward_id)["stock"] == 0
    assert error_code(redeem(api, "m", reward_id)) == (422, "out_of_stock")
    assert reward(api, reward_id)["stock"] == 0
    assert api.balance("m")["balance"] == 980


def test_redemptions_of_an_unlimited_reward_do_not_wait_for_each_other(
    api: Api, clock: FakeClock
) -> None:
    """Only a limited stock needs the reward's row lock. While one member's redemption of a
    reward without stock is still in its transaction, another member's redemption (and a
    cancel) of the same reward goes ahead instead of queueing behind it."""
    if isinstance(api.store, SqliteStore):
        pytest.skip("SQLite has no row locks: its writers take turns anyway")
    for member_id in ("m", "h"):
        member_with(api, member_id, 100)
    reward_id = new_reward(api, "Sticker", 10)
    made = redeemed(api, "m", reward_id)
    holding, finished = threading.Event(), threading.Event()
    finished_in_time: list[bool] = []

    def render_slowly(result: RedemptionResult) -> tuple[int, bytes]:
        # Called inside the redemption's transaction, after it took every lock it takes.
        holding.set()
        finished_in_time.append(finished.wait(timeout=10))
        return 201, result.redemption.id.encode()

    def redeem_and_hold() -> object:
        ledger = Ledger(api.store, clock=clock)
        command = RedeemCommand("h", reward_id)
        acme = program_id(api.store)
        return run_async(
            api.store,
            lambda: ledger.rewards.redeem(
                acme, command, created_by="key_test", idempotency=None, render=render_slowly
            ),
        )

    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(redeem_and_hold)
        assert holding.wait(timeout=10)
        again = redeem(api, "m", reward_id)
        cancelled = cancel(api, made["redemption_id"])
        finished.set()
        held.result(timeout=30)
    assert finished_in_time == [True], "the redemption waited for another one's lock"
    assert (again.status_code, cancelled.status_code) == (201, 200)
    assert (api.balance("m")["balance"], api.balance("h")["balance"]) == (90, 90)


def test_a_redemption_draws_from_the_soonest_expiring_lot_first(api: Api, clock: FakeClock) -> None:
    api.member("m")
    api.award("m", 100, expires_at=stamp("2026-03-31"))
    api.award("m", 100, expires_at=stamp("2026-01-31"))
    api.award("m", 100)
    redeemed(api, "m", new_reward(api, "Lamp", 150))
    assert lot_remainders(api.store, "m") == [50, 100]
    assert api.balance("m")["next_expiration"] == {
        "points": 50,
        "expires_at": "2026-03-31T00:00:00Z",
    }
    move_to(clock, "2026-02-15")
    assert api.history("m", type="expire") == []
    move_to(clock, "2026-04-15")
    assert [r["points"] for r in api.history("m", type="expire")] == [-50]
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_redeemed"], balance["lifetime_expired"]) == (
        100,
        150,
        50,
    )


@pytest.fixture
def catalog(api: Api) -> dict[str, str]:
    """Rewards that cannot be had for one reason each, by the error code they earn."""
    return {
        "insufficient_points": new_reward(api, "Pricey", 150, stock=5),
        "out_of_stock": new_reward(api, "Gone", 10, stock=0),
        "reward_inactive": new_reward(api, "Retired", 10, stock=5, active=False),
        "reward_not_found": "rwd_01JNOSUCHREWARD000000000000",
    }


def snapshot(api: Api, member_id: str) -> dict[str, Any]:
    return {
        "balance": api.balance(member_id),
        "history": full_history(api, member_id),
        "rewards": api.get("/v1/rewards").json(),
        "redemptions": api.get(f"/v1/members/{member_id}/redemptions").json(),
    }


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("insufficient_points", 422),
        ("out_of_stock", 422),
        ("reward_inactive", 422),
        ("reward_not_found", 404),
    ],
)
def test_a_failed_redemption_changes_nothing(
    api: Api, catalog: dict[str, str], code: str, status: int
) -> None:
    member_with(api, "m", 100)
    api.award("m", 500, available_at=stamp("2026-02-01"))
    before = snapshot(api, "m")
    response = redeem(api, "m", catalog[code])
    assert error_code(response) == (status, code)
    assert response.json()["success"] is False
    assert snapshot(api, "m") == before


def test_a_redemption_of_another_programs_reward_is_not_found(api: Api) -> None:
    member_with(api, "m", 100)
    other = api.key_for("other")
    foreign = api.post("/v1/rewards", {"name": "Theirs", "points_cost": 10, "stock": 3}, key=other)
    foreign_id = foreign.json()["data"]["reward_id"]
    assert error_code(redeem(api, "m", foreign_id)) == (404, "reward_not_found")
    assert api.get(f"/v1/rewards/{foreign_id}", key=other).json()["data"]["stock"] == 3
    assert api.balance("m")["balance"] == 100


def test_a_redemption_for_an_unknown_member_is_not_found(api: Api) -> None:
    reward_id = new_reward(api, "Mug", 10, stock=3)
    assert error_code(redeem(api, "ghost", reward_id)) == (404, "member_not_found")
    assert reward(api, reward_id)["stock"] == 3


def test_pending_points_cannot_pay_for_a_redemption(api: Api) -> None:
    member_with(api, "m", 50)
    api.award("m", 500, available_at=stamp("2026-02-01"))
    reward_id = new_reward(api, "Mug", 100, stock=3)
    assert error_code(redeem(api, "m", reward_id)) == (422, "insufficient_points")
    assert reward(api, reward_id)["stock"] == 3
    assert api.balance("m")["pending"] == 500


def test_a_redemption_after_an_expiry_can_only_use_what_is_left(api: Api, clock: FakeClock) -> None:
    member_with(api, "m", 100, expires_at=stamp("2026-01-31"))
    api.award("m", 50)
    reward_id = new_reward(api, "Mug", 60, stock=3)
    move_to(clock, "2026-02-10")
    assert error_code(redeem(api, "m", reward_id)) == (422, "insufficient_points")
    assert reward(api, reward_id)["stock"] == 3
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_expired"], balance["lifetime_redeemed"]) == (
        50,
        100,
        0,
    )


@pytest.mark.parametrize("quantity", [0, -1, 1.5, "2", None])
def test_a_redemption_quantity_must_be_a_sensible_whole_number(api: Api, quantity: object) -> None:
    member_with(api, "m", 100)
    reward_id = new_reward(api, "Mug", 1, stock=3)
    response = redeem(api, "m", reward_id, quantity=quantity)
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == "quantity"
    assert reward(api, reward_id)["stock"] == 3
    assert api.balance("m")["balance"] == 100


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"member_id": None}, "member_id"),
        ({"reward_id": None}, "reward_id"),
        ({"note": "x"}, "note"),
        ({"metadata": "x"}, "metadata"),
    ],
)
def test_a_bad_redemption_request_is_refused_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    member_with(api, "m", 100)
    body = {"member_id": "m", "reward_id": new_reward(api, "Mug", 10, stock=3), **change}
    response = api.post("/v1/redemptions", {k: v for k, v in body.items() if v is not None})
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == field
    assert api.balance("m")["balance"] == 100


def test_a_redemptions_metadata_is_kept_on_its_redeem_transaction(api: Api) -> None:
    member_with(api, "m", 100)
    metadata = {"order": "SO-1", "lines": [1, 2]}
    made = redeemed(api, "m", new_reward(api, "Mug", 10), metadata=metadata)
    assert transaction(api, made["transaction_id"])["metadata"] == metadata


def test_a_redemptions_metadata_is_stored_on_the_redemptions_own_row(api: Api) -> None:
    """The contract's redemption has no `metadata` field, so the answer does not show it; the
    redemption's row keeps it all the same (read here straight from the database)."""
    member_with(api, "m", 100)
    reward_id = new_reward(api, "Mug", 10)
    metadata = {"order": "SO-1", "note": "gift wrap ✓", "lines": [1, 2]}
    made = redeemed(api, "m", reward_id, metadata=metadata)
    plain = redeemed(api, "m", reward_id)

    def stored(redemption_id: str) -> object:
        (text,) = stored_row(
            api.store, "SELECT metadata FROM redemptions WHERE id = ?", redemption_id
        )
        return None if text is None else json.loads(text)

    assert stored(made["redemption_id"]) == metadata
    assert stored(plain["redemption_id"]) is None
    assert cancel(api, made["redemption_id"]).status_code == 200
    assert stored(made["redemption_id"]) == metadata


def stored_row(store: Store, query: str, *params: object) -> tuple[object, ...]:
    """One row read from the database behind the store, past the storage interface."""
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            return tuple(conn.execute(query, params).fetchone())
    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.url) as conn:
        return tuple(conn.execute(query.replace("?", "%s"), params).fetchone() or ())


# Cancelling a redemption


def test_cancelling_a_redemption_refunds_it_and_returns_the_stock(
    api: Api, clock: FakeClock
) -> None:
    member_with(api, "m", 500)
    reward_id = new_reward(api, "Coffee mug", 120, stock=5)
    made = redeemed(api, "m", reward_id, quantity=2)
    assert reward(api, reward_id)["stock"] == 3
    clock.advance(hours=1)
    response = cancel(api, made["redemption_id"])
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["redemption_id"], data["status"], data["points"], data["quantity"]) == (
        made["redemption_id"],
        "cancelled",
        240,
        2,
    )
    assert reward(api, reward_id)["stock"] == 5
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_redeemed"], balance["lifetime_earned"]) == (
        500,
        0,
        500,
    )
    rows = api.history("m")
    assert [(r["type"], r["points"], r["balance_after"]) for r in rows] == [
        ("refund", 240, 500),
        ("redeem", -240, 260),
        ("award", 500, 500),
    ]
    assert rows[0]["created_at"] == "2026-01-01T13:00:00Z"
    fetched = api.get(f"/v1/redemptions/{made['redemption_id']}").json()["data"]
    assert fetched["status"] == "cancelled"
    assert_ledger_order(rows, 500)


def test_a_second_cancel_is_not_cancellable_and_refunds_nothing(api: Api) -> None:
    member_with(api, "m", 500)
    reward_id = new_reward(api, "Mug", 100, stock=5)
    made = redeemed(api, "m", reward_id)
    assert cancel(api, made["redemption_id"]).status_code == 200
    before = snapshot(api, "m")
    assert error_code(cancel(api, made["redemption_id"])) == (409, "not_cancellable")
    assert snapshot(api, "m") == before
    assert reward(api, reward_id)["stock"] == 5


def test_a_refund_is_a_new_lot_under_the_current_policy(api: Api, clock: FakeClock) -> None:
    member_with(api, "m", 100)
    api.patch("/v1/program", {"points_expire_after_days": 30})
    move_to(clock, "2026-01-06T12:00")
    made = redeemed(api, "m", new_reward(api, "Mug", 60))
    assert api.balance("m")["next_expiration"] is None
    assert cancel(api, made["redemption_id"]).status_code == 200
    refund = api.history("m", type="refund")[0]
    assert (refund["points"], refund["expires_at"]) == (60, "2026-02-05T12:00:00Z")
    assert api.balance("m")["next_expiration"] == {
        "points": 60,
        "expires_at": "2026-02-05T12:00:00Z",
    }
    # The award's lot keeps only what the redemption left of it: the refund does not refill it.
    assert sorted(lot_remainders(api.store, "m")) == [40, 60]
    move_to(clock, "2026-02-06")
    expired = api.history("m", type="expire")
    assert [r["points"] for r in expired] == [-60]
    assert refund["transaction_id"] in expired[0]["reason"]
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_expired"], balance["lifetime_redeemed"]) == (
        40,
        60,
        0,
    )
    assert counters_add_up(balance)


def test_a_cancel_refunds_what_was_paid_even_after_the_price_changed(api: Api) -> None:
    member_with(api, "m", 500)
    reward_id = new_reward(api, "Mug", 100, stock=5)
    made = redeemed(api, "m", reward_id, quantity=2)
    api.patch(f"/v1/rewards/{reward_id}", {"points_cost": 30, "stock": 1})
    assert cancel(api, made["redemption_id"]).status_code == 200
    assert api.history("m", type="refund")[0]["points"] == 200
    assert api.balance("m")["balance"] == 500
    assert reward(api, reward_id)["stock"] == 3


def test_without_a_policy_a_refund_never_expires(api: Api) -> None:
    member_with(api, "m", 100)
    made = redeemed(api, "m", new_reward(api, "Mug", 60))
    assert cancel(api, made["redemption_id"]).status_code == 200
    assert api.history("m", type="refund")[0]["expires_at"] is None
    assert api.balance("m")["next_expiration"] is None


def test_a_redemption_paid_with_points_since_expired_is_still_refunded_in_full(
    api: Api, clock: FakeClock
) -> None:
    member_with(api, "m", 100, expires_at=stamp("2026-01-31"))
    made = redeemed(api, "m", new_reward(api, "Mug", 100))
    move_to(clock, "2026-02-15")
    assert cancel(api, made["redemption_id"]).status_code == 200
    balance = api.balance("m")
    assert (balance["balance"], balance["lifetime_redeemed"], balance["lifetime_expired"]) == (
        100,
        0,
        0,
    )


def test_cancelling_keeps_unlimited_stock_unlimited(api: Api) -> None:
    member_with(api, "m", 100)
    reward_id = new_reward(api, "Voucher", 30)
    made = redeemed(api, "m", reward_id)
    assert cancel(api, made["redemption_id"]).status_code == 200
    assert reward(api, reward_id)["stock"] is None


def test_cancelling_an_unknown_or_another_programs_redemption_is_not_found(api: Api) -> None:
    member_with(api, "m", 100)
    made = redeemed(api, "m", new_reward(api, "Mug", 30))
    other = api.key_for("other")
    assert error_code(cancel(api, "red_nope")) == (404, "redemption_not_found")
    assert error_code(cancel(api, made["redemption_id"], key=other)) == (
        404,
        "redemption_not_found",
    )
    assert error_code(api.get(f"/v1/redemptions/{made['redemption_id']}", key=other)) == (
        404,
        "redemption_not_found",
    )
    assert api.balance("m")["balance"] == 70


# Reading redemptions


def test_a_redemption_is_fetched_by_id(api: Api) -> None:
    member_with(api, "m", 100)
    made = redeemed(api, "m", new_reward(api, "Mug", 30))
    response = api.get(f"/v1/redemptions/{made['redemption_id']}")
    assert response.status_code == 200
    assert response.json()["data"] == made
    assert error_code(api.get("/v1/redemptions/red_nope")) == (404, "redemption_not_found")


def test_a_members_redemptions_are_listed_newest_first_with_meta(
    api: Api, clock: FakeClock
) -> None:
    member_with(api, "m", 1_000)
    member_with(api, "someone-else", 1_000)
    reward_id = new_reward(api, "Mug", 10)
    made = []
    for quantity in (1, 2, 3):
        made.append(redeemed(api, "m", reward_id, quantity=quantity)["redemption_id"])
        redeemed(api, "someone-else", reward_id)
        clock.advance(minutes=5)
    assert cancel(api, made[1]).status_code == 200
    first = api.get("/v1/members/m/redemptions", per_page=2).json()
    assert first["meta"] == {"page": 1, "per_page": 2, "total": 3, "total_pages": 2}
    assert [(r["redemption_id"], r["status"]) for r in first["data"]] == [
        (made[2], "completed"),
        (made[1], "cancelled"),
    ]
    second = api.get("/v1/members/m/redemptions", page=2, per_page=2).json()
    assert [r["redemption_id"] for r in second["data"]] == [made[0]]
    assert all(r["member_id"] == "m" for r in first["data"] + second["data"])


def test_the_redemptions_of_an_unknown_member_are_not_found(api: Api) -> None:
    assert error_code(api.get("/v1/members/ghost/redemptions")) == (404, "member_not_found")


@pytest.mark.parametrize("params", [{"per_page": "101"}, {"page": "0"}, {"per_page": "x"}])
def test_the_redemption_list_refuses_bad_paging(api: Api, params: dict[str, str]) -> None:
    api.member("m")
    response = api.get("/v1/members/m/redemptions", **params)
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] in params
