"""Member update and erasure (api.md section 9): `PATCH /v1/members/{id}` and
`POST /v1/members/{id}/erase`.

Erasure removes the member's email, name and metadata and the metadata of its transactions for
good: from every answer of the API (the member, lists, history, transactions, the events feed,
replayed Idempotency-Key answers) and from the database itself (every table read directly; on
SQLite the file's bytes too). The ledger stays. Every test runs on each backend; the `api`
fixture checks `tally verify` afterwards.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.ledger_support import error_code, full_history, stamp, transaction
from tests.support import Api, everything
from tests.test_events import poll

EMAIL = "alice.private@example.com"
NAME = "Alice Privatename"
MEMBER_NOTE = "MEMBER-SECRET-7f3a"
ORDER_NOTE = "ORDER-SECRET-91bc"
GIFT_NOTE = "GIFT-SECRET-55de"
# Large enough to live on SQLite overflow pages, which erasure frees.
PADDING = "P" * 6000
SECRETS = (EMAIL, NAME, MEMBER_NOTE, ORDER_NOTE)


def found_in_api(api: Api, text: str) -> list[str]:
    """Where, among everything the program can read, `text` still appears."""
    places = {
        "everything": everything(api),
        "events": poll(api, limit=1000),
        "alice": api.get("/v1/members/alice").json(),
    }
    for row in full_history(api, "alice"):
        places[row["transaction_id"]] = transaction(api, row["transaction_id"])
    return [name for name, value in places.items() if text in json.dumps(value)]


@contextlib.contextmanager
def raw_connection(database_url: str) -> Iterator[Any]:
    conn: Any
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    else:
        conn = psycopg.connect(database_url, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def found_in_tables(database_url: str, text: str) -> list[str]:
    """The tables holding `text` in any live row, read straight from the database."""
    with raw_connection(database_url) as conn:
        if database_url.startswith("sqlite"):
            names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
        else:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            ]
        hits = []
        for table in names:
            for row in conn.execute(f'SELECT * FROM "{table}"').fetchall():
                cells = [bytes(c).decode(errors="replace") if _binary(c) else str(c) for c in row]
                if any(text in cell for cell in cells):
                    hits.append(table)
                    break
        return hits


def _binary(cell: object) -> bool:
    return isinstance(cell, (bytes, bytearray, memoryview))


def found_in_sqlite_file(database_url: str, text: str) -> bool:
    """Whether `text`'s bytes are anywhere in the SQLite file or its WAL, once checkpointed."""
    path = database_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    data = b""
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError), open(path + suffix, "rb") as file:
            data += file.read()
    return text.encode() in data


@pytest.fixture
def alice(api: Api) -> Api:
    """Member `alice` with personal data everywhere Tally keeps some: her profile (created, then
    updated), awards and a deduct with metadata (with Idempotency-Keys, so their answers are
    stored), a pending award, a redemption; and `bob`, who is not erased."""
    api.member("alice", email="old@example.com", name="Al")
    response = api.patch(
        "/v1/members/alice", {"email": EMAIL, "name": NAME, "metadata": {"n": MEMBER_NOTE}}
    )
    assert response.status_code == 200, response.text
    api.member("bob", email="bob@example.com", name="Bob", metadata={"n": "bob's own"})
    order = {"note": ORDER_NOTE, "padding": PADDING}
    award = {"member_id": "alice", "points": 500, "reason": "order", "metadata": order}
    assert api.post("/v1/points/award", award, idem="order-1").status_code == 201
    later = {**award, "available_at": stamp("2026-02-01")}
    assert api.post("/v1/points/award", later, idem="order-2").status_code == 201
    deduct = {"member_id": "alice", "points": 50, "reason": "fix", "metadata": {"n": ORDER_NOTE}}
    assert api.post("/v1/points/deduct", deduct, idem="fix-1").status_code == 201
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 40}).json()["data"]
    redemption = {"member_id": "alice", "reward_id": reward["reward_id"], "metadata": order}
    assert api.post("/v1/redemptions", redemption).status_code == 201
    api.award("bob", 30, metadata={"n": "bob's award"})
    return api


def erase(api: Api, member_id: str = "alice") -> Any:
    response = api.post(f"/v1/members/{member_id}/erase")
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_an_update_changes_the_named_fields_and_writes_member_updated(api: Api) -> None:
    api.member("m", email="a@example.com", name="A", metadata={"tier": "gold"})
    response = api.patch("/v1/members/m", {"name": "B", "metadata": None})
    assert response.status_code == 200, response.text
    member = response.json()["data"]
    assert (member["email"], member["name"], member["metadata"]) == ("a@example.com", "B", None)
    assert api.get("/v1/members/m").json()["data"] == member
    (updated,) = poll(api, type="member.updated")
    assert updated["data"] == member
    # Nothing named: the member as it is, and no event.
    assert api.patch("/v1/members/m", {}).json()["data"] == member
    assert len(poll(api, type="member.updated")) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"member_id": "other"}, "member_id"),
        ({"nickname": "Al"}, "nickname"),
    ],
)
def test_a_bad_update_is_refused_naming_the_field_and_changes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    api.member("m", email="a@example.com", name="A")
    before = everything(api)
    response = api.patch("/v1/members/m", body)
    assert error_code(response) == (422, "validation_error")
    assert response.json()["error"]["details"][0]["field"] == field
    assert everything(api) == before


def test_an_unknown_or_another_programs_member_is_not_found(api: Api) -> None:
    other = api.key_for("other")
    assert api.post("/v1/members", {"member_id": "theirs"}, key=other).status_code == 201
    for member_id in ("nobody", "theirs"):
        assert error_code(api.patch(f"/v1/members/{member_id}", {"name": "X"})) == (
            404,
            "member_not_found",
        )
        response = api.post(f"/v1/members/{member_id}/erase")
        assert error_code(response) == (404, "member_not_found")
    assert api.get("/v1/members/theirs", key=other).json()["data"]["erased_at"] is None


def test_erasure_leaves_no_trace_of_the_personal_data_in_the_api(alice: Api) -> None:
    for secret in SECRETS:
        assert found_in_api(alice, secret), secret  # there before
    history = full_history(alice, "alice")
    balance = alice.balance("alice")
    erased = erase(alice)
    assert (erased["email"], erased["name"], erased["metadata"]) == (None, None, None)
    assert erased["erased_at"] == stamp(alice.clock())  # type: ignore[misc]
    assert alice.get("/v1/members/alice").json()["data"] == erased
    for secret in SECRETS:
        assert found_in_api(alice, secret) == [], secret
    # The ledger stays: the same rows, ids, points, reasons and balances, without metadata.
    assert full_history(alice, "alice") == [{**row, "metadata": None} for row in history]
    assert alice.balance("alice") == balance
    # Bob keeps everything of his.
    bob = alice.get("/v1/members/bob").json()["data"]
    assert (bob["email"], bob["metadata"], bob["erased_at"]) == (
        "bob@example.com",
        {"n": "bob's own"},
        None,
    )
    assert full_history(alice, "bob")[0]["metadata"] == {"n": "bob's award"}


def test_erasure_writes_member_erased_and_scrubs_the_earlier_events(alice: Api) -> None:
    erased = erase(alice)
    events = poll(alice, limit=1000)
    (erasure,) = [e for e in events if e["type"] == "member.erased"]
    assert erasure["data"] == erased
    earlier = [e for e in events if e["data"].get("member_id") == "alice" and e is not erasure]
    assert {e["type"] for e in earlier} == {
        "member.created",
        "member.updated",
        "transaction.created",
        "redemption.created",
    }
    for event in earlier:
        for field in ("email", "name", "metadata"):
            assert event["data"].get(field) is None, event
    # An event id, type and time stay as they were: the feed's order is untouched.
    assert [e["event_id"] for e in events] == sorted(e["event_id"] for e in events)


def test_a_replayed_answer_no_longer_carries_the_personal_data(alice: Api) -> None:
    erase(alice)
    award = {
        "member_id": "alice",
        "points": 500,
        "reason": "order",
        "metadata": {"note": ORDER_NOTE, "padding": PADDING},
    }
    replay = alice.post("/v1/points/award", award, idem="order-1")
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert ORDER_NOTE not in replay.text
    assert replay.json()["data"]["metadata"] is None
    assert alice.balance("alice")["lifetime_earned"] == 500  # still one award, not two


def test_erasure_leaves_no_trace_in_the_database(alice: Api, database_url: str) -> None:
    url = database_url
    assert set(found_in_tables(url, EMAIL)) == {"members", "events"}
    assert set(found_in_tables(url, ORDER_NOTE)) == {
        "entries",
        "redemptions",
        "events",
        "idempotency_keys",
    }
    erase(alice)
    for secret in SECRETS:
        assert found_in_tables(url, secret) == [], secret
    if url.startswith("sqlite"):
        # secure_delete: the old bytes were overwritten, overflow pages of the padding too.
        for secret in SECRETS:
            assert not found_in_sqlite_file(url, secret), secret
    assert found_in_tables(url, "bob's own") == ["members", "events"]


def test_an_erased_member_still_earns_and_spends_but_its_profile_cannot_change(
    alice: Api,
) -> None:
    erase(alice)
    before = alice.balance("alice")["balance"]
    alice.award("alice", 25)
    assert alice.deduct("alice", 10).status_code == 201
    assert alice.balance("alice")["balance"] == before + 15
    response = alice.patch("/v1/members/alice", {"name": "Alice again"})
    assert error_code(response) == (409, "member_erased")
    assert error_code(alice.patch("/v1/members/alice", {})) == (409, "member_erased")
    assert alice.get("/v1/members/alice").json()["data"]["name"] is None


def test_erasing_again_removes_what_arrived_since_and_keeps_the_first_time(
    alice: Api,
) -> None:
    first = erase(alice)
    assert alice.clock is not None
    alice.clock.advance(hours=1)
    late = alice.award("alice", 5, metadata={"n": "LATE-SECRET"})
    assert transaction(alice, late["transaction_id"])["metadata"] == {"n": "LATE-SECRET"}
    again = erase(alice)
    assert again == first  # erased_at stays the first erasure's
    assert found_in_api(alice, "LATE-SECRET") == []
    assert len(poll(alice, type="member.erased")) == 1


def test_an_erasure_with_an_idempotency_key_replays(alice: Api) -> None:
    first = alice.post("/v1/members/alice/erase", idem="forget-alice")
    again = alice.post("/v1/members/alice/erase", idem="forget-alice")
    assert first.status_code == again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true" and again.content == first.content


def test_an_erasure_takes_no_fields(alice: Api) -> None:
    response = alice.post("/v1/members/alice/erase", {"everything": True})
    assert error_code(response) == (422, "validation_error")
    assert alice.get("/v1/members/alice").json()["data"]["erased_at"] is None


def test_a_transfers_receiver_keeps_its_own_row_of_the_transfer(alice: Api) -> None:
    moved = alice.post(
        "/v1/points/transfer",
        {
            "from_member_id": "alice",
            "to_member_id": "bob",
            "points": 10,
            "reason": "gift",
            "metadata": {"n": GIFT_NOTE},
        },
        idem="gift-1",
    )
    assert moved.status_code == 201, moved.text
    erase(alice)
    sent, received = moved.json()["data"]["from"], moved.json()["data"]["to"]
    assert transaction(alice, sent["transaction_id"])["metadata"] is None
    assert transaction(alice, received["transaction_id"])["metadata"] == {"n": GIFT_NOTE}
    replay = alice.post(
        "/v1/points/transfer",
        {
            "from_member_id": "alice",
            "to_member_id": "bob",
            "points": 10,
            "reason": "gift",
            "metadata": {"n": GIFT_NOTE},
        },
        idem="gift-1",
    ).json()["data"]
    assert (replay["from"]["metadata"], replay["to"]["metadata"]) == (None, {"n": GIFT_NOTE})
