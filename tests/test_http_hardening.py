"""Input a careless or hostile client can send, through HTTP on every backend: each is refused
with a clean 4xx naming what is wrong (or accepted where it is fine), never a 500.

JSON nested too deep, numbers no machine type holds, dates at the edges of the calendar,
duplicate keys and repeated query parameters, lone UTF-16 surrogates, and the bodies of the two
cancel routes (api.md sections 1 and 10; docs/api.md says which status each gets).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support import Api, everything
from tests.test_errors import assert_error

JSON_CONTENT = {"Content-Type": "application/json"}


def post(api: Api, path: str, content: bytes) -> httpx.Response:
    return api.client.post(path, content=content, headers=api.headers(**JSON_CONTENT))


def award_with(**fields: Any) -> dict[str, Any]:
    return {"member_id": "m", "points": 5, "reason": "bonus", **fields}


def nested(depth: int, *, inner: bytes = b"1") -> bytes:
    """A JSON value `depth` levels deep: arrays inside arrays around `inner`."""
    return b"[" * depth + inner + b"]" * depth


# Nesting: at most 32 levels, counted from the body itself (the body object is level 1).


def award_whose_metadata_nests(levels: int) -> bytes:
    """An award whose body is nested `levels` deep in all (its metadata `levels - 1`)."""
    metadata = b'{"a":' + nested(levels - 2) + b"}"
    return b'{"member_id":"m","points":5,"reason":"deep","metadata":' + metadata + b"}"


DEEP_BODIES = {
    "metadata 1,100 levels deep": award_whose_metadata_nests(1100),
    "arrays 1,100 levels deep": nested(1100),
    "objects 1,100 levels deep": b'{"a":' * 1100 + b"1" + b"}" * 1100,
    "5,000 opening brackets": b"[" * 5000,
    "metadata 33 levels deep": award_whose_metadata_nests(33),
}


@pytest.mark.parametrize("content", DEEP_BODIES.values(), ids=list(DEEP_BODIES))
def test_json_nested_deeper_than_32_levels_is_invalid_json(api: Api, content: bytes) -> None:
    api.member("m")
    before = everything(api)
    for path in ("/v1/points/award", "/v1/points/award/bulk", "/v1/members"):
        error = assert_error(post(api, path, content), 400, "invalid_json")
        assert "32 levels" in error["message"] or "not valid JSON" in error["message"]
    assert everything(api) == before


def test_the_depth_limit_says_so(api: Api) -> None:
    error = assert_error(post(api, "/v1/points/award", nested(40)), 400, "invalid_json")
    assert "nested more than 32 levels deep" in error["message"]


def test_json_nested_exactly_32_levels_is_accepted(api: Api) -> None:
    api.member("m")
    response = post(api, "/v1/points/award", award_whose_metadata_nests(32))
    assert response.status_code == 201, response.text


def test_brackets_inside_strings_do_not_count_as_nesting(api: Api) -> None:
    api.member("m")
    reason = "[{" * 200 + '\\"' + "}]" * 3
    content = json.dumps(award_with(reason=reason)).encode()
    response = post(api, "/v1/points/award", content)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["reason"] == reason


# Numbers no machine type holds: 1e400, an integer of 5,000 digits.

HUGE_NUMBERS = {"1e400": b"1e400", "5,000 digits": b"9" * 5000, "-1e400": b"-1e400"}


@pytest.mark.parametrize("number", HUGE_NUMBERS.values(), ids=list(HUGE_NUMBERS))
def test_an_out_of_range_number_is_a_validation_error_naming_the_field(
    api: Api, number: bytes
) -> None:
    api.member("m")
    content = b'{"member_id":"m","points":' + number + b',"reason":"r"}'
    assert_error(post(api, "/v1/points/award", content), 422, "validation_error", "points")
    in_metadata = b'{"member_id":"m","points":5,"reason":"r","metadata":{"x":' + number + b"}}"
    assert_error(post(api, "/v1/points/award", in_metadata), 422, "validation_error", "metadata")


@pytest.mark.parametrize("number", HUGE_NUMBERS.values(), ids=list(HUGE_NUMBERS))
def test_a_bulk_item_with_an_out_of_range_number_fails_alone(api: Api, number: bytes) -> None:
    api.member("m")
    good = b'{"member_id":"m","points":5,"reason":"r"}'
    bad = b'{"member_id":"m","points":' + number + b',"reason":"r"}'
    bad_metadata = b'{"reason":"r","metadata":{"x":[' + number + b']},"member_id":"m","points":1}'
    content = b'{"awards":[' + b",".join([good, bad, bad_metadata, good]) + b"]}"
    response = post(api, "/v1/points/award/bulk", content)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["processed"], data["failed"]) == (2, 2)
    assert [(e["index"], e["member_id"], e["error"]["code"]) for e in data["errors"]] == [
        (1, "m", "validation_error"),
        (2, "m", "validation_error"),
    ]
    fields = [d["field"] for e in data["errors"] for d in e["error"]["details"]]
    assert fields == ["awards[1].points", "awards[2].metadata"]
    assert api.balance("m")["balance"] == 10


# The edges of the calendar: 0001-01-01 and 9999-12-31, with offsets that leave it.

UNREPRESENTABLE = ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


@pytest.mark.parametrize("moment", UNREPRESENTABLE)
@pytest.mark.parametrize("name", ["available_at", "expires_at"])
def test_a_time_beyond_the_calendar_in_utc_is_a_validation_error(
    api: Api, name: str, moment: str
) -> None:
    api.member("m")
    before = everything(api)
    response = api.post("/v1/points/award", award_with(**{name: moment}))
    assert_error(response, 422, "validation_error", name)
    bulk = api.post("/v1/points/award/bulk", {"awards": [award_with(**{name: moment})]})
    assert bulk.status_code == 200, bulk.text
    [error] = bulk.json()["data"]["errors"]
    assert [d["field"] for d in error["error"]["details"]] == [f"awards[0].{name}"]
    assert everything(api) == before


def test_the_last_representable_moment_is_a_valid_availability(api: Api) -> None:
    api.member("m")
    created = api.award("m", 5, available_at="9999-12-31T23:59:59Z")
    assert (created["status"], created["available_at"]) == ("pending", "9999-12-31T23:59:59Z")
    assert api.balance("m")["pending"] == 5


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"to": "9999-12-31"}, 200),
        ({"from": "0001-01-01"}, 200),
        ({"from": "0001-01-01", "to": "9999-12-31"}, 200),
        ({"to": "9999-12-31T23:59:59.999999Z"}, 200),
        ({"from": "0001-01-01T00:00:00+14:00"}, 422),
        ({"to": "9999-12-31T23:59:59-14:00"}, 422),
    ],
    ids=lambda value: str(value),
)
def test_history_bounds_at_the_edges_of_the_calendar(
    api: Api, params: dict[str, str], status: int
) -> None:
    api.member("m")
    api.award("m", 5)
    response = api.get("/v1/members/m/transactions", **params)
    if status == 200:
        assert response.status_code == 200, response.text
        assert len(response.json()["data"]) == 1
    else:
        assert_error(response, 422, "validation_error", next(iter(params)))


# Duplicate keys.

DUPLICATES = {
    "points twice": (b'{"member_id":"m","points":1,"points":1000,"reason":"r"}', "points"),
    "spelled with an escape": (
        b'{"member_id":"m","points":1,"p\\u006fints":1000,"reason":"r"}',
        "points",
    ),
    "inside metadata": (
        b'{"member_id":"m","points":1,"reason":"r","metadata":{"a":{"b":1,"b":2}}}',
        "metadata.a.b",
    ),
}


@pytest.mark.parametrize(("content", "field"), DUPLICATES.values(), ids=list(DUPLICATES))
def test_a_duplicate_key_is_a_validation_error_naming_it(
    api: Api, content: bytes, field: str
) -> None:
    api.member("m")
    before = everything(api)
    error = assert_error(post(api, "/v1/points/award", content), 422, "validation_error", field)
    assert "more than once" in error["message"]
    assert everything(api) == before


def test_a_duplicate_key_inside_a_bulk_item_refuses_the_whole_bulk(api: Api) -> None:
    api.member("m")
    before = everything(api)
    item = b'{"member_id":"m","points":1,"reason":"r","reason":"s"}'
    content = b'{"awards":[{"member_id":"m","points":1,"reason":"r"},' + item + b"]}"
    response = post(api, "/v1/points/award/bulk", content)
    assert_error(response, 422, "validation_error", "awards[1].reason")
    assert everything(api) == before


def test_the_same_key_in_different_objects_is_fine(api: Api) -> None:
    api.member("m")
    body = award_with(metadata={"member_id": "x", "points": {"points": 1}})
    assert api.post("/v1/points/award", body).status_code == 201


# Repeated query parameters.


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("/v1/members/m/transactions", "type=award&type=deduct", "type"),
        ("/v1/members/m/transactions", "from=2026-01-01&from=2026-02-01", "from"),
        ("/v1/members/m/transactions", "page=1&page=2", "page"),
        ("/v1/members", "per_page=5&per_page=50", "per_page"),
        ("/v1/rewards", "page=1&page=1", "page"),
    ],
)
def test_a_repeated_query_parameter_is_a_validation_error_naming_it(
    api: Api, path: str, query: str, name: str
) -> None:
    api.member("m")
    response = api.client.get(f"{path}?{query}", headers=api.headers())
    error = assert_error(response, 422, "validation_error", name)
    assert "more than once" in error["message"]


# Lone UTF-16 surrogates: half a character.

SURROGATES = {
    "a lone high surrogate": "\\ud800",
    "a lone low surrogate": "\\udc00",
    "a high surrogate before a letter": "\\ud83dx",
    "a high surrogate before another escape": "\\ud800\\u0041",
}


@pytest.mark.parametrize("escape", SURROGATES.values(), ids=list(SURROGATES))
def test_a_lone_surrogate_is_invalid_json_saying_so(api: Api, escape: str) -> None:
    api.member("m")
    content = b'{"member_id":"m","points":1,"reason":"a' + escape.encode() + b'"}'
    error = assert_error(post(api, "/v1/points/award", content), 400, "invalid_json")
    assert "surrogate" in error["message"]
    assert escape[:6] in error["message"]


def test_a_whole_surrogate_pair_is_one_character(api: Api) -> None:
    api.member("m")
    content = b'{"member_id":"m","points":1,"reason":"\\ud83d\\ude00 \\\\ud800"}'
    response = post(api, "/v1/points/award", content)
    assert response.status_code == 201, response.text
    assert response.json()["data"]["reason"] == "\U0001f600 \\ud800"


# The cancel routes take no fields: an empty body or {} only.


@pytest.fixture
def cancellable(api: Api) -> dict[str, str]:
    """A pending award and a redemption, each to be cancelled."""
    api.member("m")
    api.award("m", 100)
    pending = api.award("m", 40, available_at="2026-02-01T00:00:00Z")["transaction_id"]
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10}).json()["data"]
    redeemed = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward["reward_id"]})
    return {
        "transaction": f"/v1/transactions/{pending}/cancel",
        "redemption": f"/v1/redemptions/{redeemed.json()['data']['redemption_id']}/cancel",
    }


@pytest.mark.parametrize("what", ["transaction", "redemption"])
@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b'{"reason": "typo"}', 422, "validation_error"),
        (b"{", 400, "invalid_json"),
        (b"[]", 400, "invalid_json"),
        (b"nonsense", 400, "invalid_json"),
    ],
    ids=["an unknown field", "invalid JSON", "an array", "not JSON"],
)
def test_a_cancel_with_a_body_it_cannot_take_is_refused_and_changes_nothing(
    api: Api, cancellable: dict[str, str], what: str, content: bytes, status: int, code: str
) -> None:
    before = everything(api)
    assert_error(post(api, cancellable[what], content), status, code)
    assert everything(api) == before


@pytest.mark.parametrize("what", ["transaction", "redemption"])
@pytest.mark.parametrize("content", [b"", b"{}", b" { } "], ids=["empty", "{}", "spaced {}"])
def test_a_cancel_with_an_empty_body_or_an_empty_object_cancels(
    api: Api, cancellable: dict[str, str], what: str, content: bytes
) -> None:
    response = post(api, cancellable[what], content)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "cancelled"
