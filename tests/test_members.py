"""Members: enrol, fetch, list."""

from __future__ import annotations

from tests.support import Api


def test_a_member_is_created_and_fetched(api: Api) -> None:
    created = api.member(
        "alice@shop", email="alice@example.com", name="Alice", metadata={"tier": 2}
    )
    assert created == {
        "member_id": "alice@shop",
        "email": "alice@example.com",
        "name": "Alice",
        "metadata": {"tier": 2},
        "created_at": "2026-01-01T12:00:00Z",
        "erased_at": None,
    }
    fetched = api.get("/v1/members/alice@shop")
    assert fetched.status_code == 200 and fetched.json()["data"] == created


def test_a_member_id_is_generated_when_omitted(api: Api) -> None:
    response = api.post("/v1/members", {"name": "Bob"})
    assert response.status_code == 201
    assert response.json()["data"]["member_id"].startswith("mem_")
    empty = api.post("/v1/members")
    assert empty.status_code == 201


def test_an_existing_member_id_is_a_conflict(api: Api) -> None:
    api.member("m1", name="First")
    response = api.post("/v1/members", {"member_id": "m1", "name": "Second"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "member_exists"
    assert api.get("/v1/members/m1").json()["data"]["name"] == "First"


def test_members_are_listed_in_enrolment_order_with_meta(api: Api) -> None:
    for i in range(5):
        api.member(f"m{i}")
    body = api.get("/v1/members", page=2, per_page=2).json()
    assert [m["member_id"] for m in body["data"]] == ["m2", "m3"]
    assert body["meta"] == {"page": 2, "per_page": 2, "total": 5, "total_pages": 3}


def test_bad_member_ids_are_refused(api: Api) -> None:
    for bad in ("", "has space", "x" * 65, "slash/id", "émile"):
        response = api.post("/v1/members", {"member_id": bad})
        assert response.status_code == 422, bad
        assert response.json()["error"]["details"][0]["field"] == "member_id"
    assert api.get("/v1/members").json()["meta"]["total"] == 0
