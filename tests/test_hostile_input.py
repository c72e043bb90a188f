"""Hostile and broken input, sent to a real `tally serve` on every backend (api.md sections 1, 4
and 10).

JSON nested 1,100 deep, numbers no integer type holds, NUL characters, bytes that are not UTF-8,
lone surrogate escapes, duplicate keys, repeated query parameters and dates at the edges of the
calendar. Each gets a clean client error in the envelope (never a 500), changes nothing, and the
server goes on answering; a bulk award's bad item fails alone or refuses the request, and never
takes the request down. At the end `tally verify` finds the ledger whole.

Where the contract allows two answers (`400 invalid_json` or `422 validation_error` for a body
that is JSON but not an acceptable one) both are accepted; where it names one, that one is
asserted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS, POSTGRES_URL
from tests.support import Live, assert_documented, everything, postgres_copy, serving, verified

JSON = {"Content-Type": "application/json"}
CLEAN_REFUSALS = {(400, "invalid_json"), (422, "validation_error")}
LEAKS = ("traceback", "sqlite", "psycopg", "select ", "insert into")
START_BALANCE = 100


@pytest.fixture(scope="module", params=BACKENDS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    """One server per backend for the whole module; member `m` holds 100 points."""
    database: contextlib.AbstractContextManager[str]
    if request.param == "sqlite":
        database = contextlib.nullcontext(f"sqlite:///{tmp_path_factory.mktemp('hostile')}/t.db")
    else:
        if POSTGRES_URL is None:
            pytest.skip("TALLY_TEST_POSTGRES_URL is not set")
        template = request.getfixturevalue("postgres_template")
        database = postgres_copy(POSTGRES_URL, template, prefix="tally_hostile")
    with database as url, serving(url) as live:
        live.api.member("m")
        live.api.award("m", START_BALANCE)
        yield live
        verified(url)


def hostile(
    live: Live, method: str, path: str, *, content: bytes = b"", body: Any = None
) -> httpx.Response:
    """One hostile request on a connection of its own (checked against the document).

    Today a 500 also drops the keep-alive connection it was answered on (Starlette re-raises to
    uvicorn after answering), so the shared client's next request could meet a reset; a
    connection of its own keeps one defect from failing the tests that follow.
    """
    headers = live.api.headers(**(JSON if content else {}))
    hooks = {"response": [assert_documented]}
    with httpx.Client(base_url=live.url, timeout=60, event_hooks=hooks) as client:
        if body is not None:
            return client.request(method, path, json=body, headers=headers)
        return client.request(method, path, content=content, headers=headers)


def post_raw(live: Live, path: str, content: bytes) -> httpx.Response:
    return hostile(live, "POST", path, content=content)


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    """(status, error code); the body must be our envelope and leak nothing."""
    assert response.headers["content-type"].split(";")[0] == "application/json", response.text
    assert not [w for w in LEAKS if w in response.text.lower()], response.text
    body = response.json()
    if response.status_code < 400:
        assert body["success"] is True
        return response.status_code, None
    assert body["success"] is False and body["error"]["message"].strip(), response.text
    return response.status_code, body["error"]["code"]


@contextlib.contextmanager
def unchanged(live: Live) -> Iterator[None]:
    """Nothing the program can read changes inside the block, and the server still answers."""
    before = everything(live.api)
    yield
    assert everything(live.api) == before


def award_body(points: str = "5", **extra: str) -> bytes:
    """An award to `m` with `points` and extra fields spliced in as raw JSON text."""
    fields = {"member_id": '"m"', "points": points, "reason": '"hostile"', **extra}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


def bulk_body(*items: bytes, atomic: bool = False) -> bytes:
    return b'{"atomic":' + json.dumps(atomic).encode() + b',"awards":[' + b",".join(items) + b"]}"


GOOD_ITEM = award_body("7")


def assert_bulk_item_refused(live: Live, response: httpx.Response, before: int) -> None:
    """A bulk of [bad item, good item]: the bad one fails alone (the good one applies), or the
    whole request is refused cleanly (nothing applies). Never a 500."""
    got = outcome(response)
    balance = live.api.balance("m")["balance"]
    if got == (200, None):
        data = response.json()["data"]
        assert (data["processed"], data["failed"]) == (1, 1), response.text
        assert [(e["index"], e["error"]["code"]) for e in data["errors"]] == [
            (0, "validation_error")
        ], response.text
        assert balance == before + 7
    else:
        assert got in CLEAN_REFUSALS, response.text
        assert balance == before


# JSON nested 1,100 deep (the contract: deeper than 32 levels is refused)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


DEEP_BODIES = {
    "metadata nested 1,100 deep": award_body(metadata='{"a":' + nested(1100) + "}"),
    "metadata nested 40 deep": award_body(metadata='{"a":' + nested(40) + "}"),
    "a body of 1,100 [": b"[" * 1100,
    "a body of 1,100 [ closed": nested(1100).encode(),
    "a body of 1,100 { unclosed": b'{"a":' * 1100,
}


@pytest.mark.parametrize("body", DEEP_BODIES.values(), ids=list(DEEP_BODIES))
def test_json_nested_too_deep_is_a_clean_refusal(live: Live, body: bytes) -> None:
    with unchanged(live):
        response = post_raw(live, "/v1/points/award", body)
        assert outcome(response) in CLEAN_REFUSALS, response.text


def test_a_bulk_item_nested_too_deep_fails_alone_or_refuses_the_request(live: Live) -> None:
    before = live.api.balance("m")["balance"]
    deep_item = award_body(metadata='{"a":' + nested(1100) + "}")
    response = post_raw(live, "/v1/points/award/bulk", bulk_body(deep_item, GOOD_ITEM))
    assert_bulk_item_refused(live, response, before)


# Numbers no integer type holds

HUGE_NUMBERS = {
    "a 5,000-digit integer": "9" * 5000,
    "a negative 5,000-digit integer": "-" + "9" * 5000,
    "1e400": "1e400",
    "-1e400": "-1e400",
    "2**64": str(2**64),
    "2**63": str(2**63),
}


@pytest.mark.parametrize("points", HUGE_NUMBERS.values(), ids=list(HUGE_NUMBERS))
def test_points_no_integer_holds_are_a_clean_refusal(live: Live, points: str) -> None:
    with unchanged(live):
        response = post_raw(live, "/v1/points/award", award_body(points))
        assert outcome(response) in CLEAN_REFUSALS, response.text
        response = post_raw(live, "/v1/points/deduct", award_body(points))
        assert outcome(response) in CLEAN_REFUSALS, response.text


@pytest.mark.parametrize("points", HUGE_NUMBERS.values(), ids=list(HUGE_NUMBERS))
def test_a_bulk_item_with_points_no_integer_holds_fails_alone_or_refuses_the_request(
    live: Live, points: str
) -> None:
    before = live.api.balance("m")["balance"]
    response = post_raw(live, "/v1/points/award/bulk", bulk_body(award_body(points), GOOD_ITEM))
    assert_bulk_item_refused(live, response, before)


@pytest.mark.parametrize("points", ["9" * 5000, "1e400"], ids=["5,000 digits", "1e400"])
def test_an_atomic_bulk_with_points_no_integer_holds_applies_nothing(
    live: Live, points: str
) -> None:
    with unchanged(live):
        body = bulk_body(award_body(points), GOOD_ITEM, atomic=True)
        response = post_raw(live, "/v1/points/award/bulk", body)
        assert outcome(response) in CLEAN_REFUSALS, response.text


# NUL characters: refused in every string, metadata included (PostgreSQL text cannot hold them,
# and both backends accept exactly the same input)

NUL = "a\u0000b"
NUL_FIELDS: dict[str, tuple[str, dict[str, Any], str]] = {
    "award reason": ("/v1/points/award", {"member_id": "m", "points": 5, "reason": NUL}, "reason"),
    "award reference": (
        "/v1/points/award",
        {"member_id": "m", "points": 5, "reason": "x", "reference": NUL},
        "reference",
    ),
    "award metadata value": (
        "/v1/points/award",
        {"member_id": "m", "points": 5, "reason": "x", "metadata": {"note": NUL}},
        "metadata",
    ),
    "award metadata key": (
        "/v1/points/award",
        {"member_id": "m", "points": 5, "reason": "x", "metadata": {NUL: "x"}},
        "metadata",
    ),
    "nested metadata value": (
        "/v1/points/award",
        {"member_id": "m", "points": 5, "reason": "x", "metadata": {"a": [{"b": NUL}]}},
        "metadata",
    ),
    "deduct reason": (
        "/v1/points/deduct",
        {"member_id": "m", "points": 1, "reason": NUL},
        "reason",
    ),
    "member name": ("/v1/members", {"member_id": "nul1", "name": NUL}, "name"),
    "member metadata": ("/v1/members", {"member_id": "nul2", "metadata": {"k": NUL}}, "metadata"),
    "reward name": ("/v1/rewards", {"name": NUL, "points_cost": 5}, "name"),
    "reward metadata": (
        "/v1/rewards",
        {"name": "Cap", "points_cost": 5, "metadata": {"k": NUL}},
        "metadata",
    ),
}


@pytest.mark.parametrize("case", NUL_FIELDS)
def test_a_nul_character_in_any_string_is_a_validation_error_naming_the_field(
    live: Live, case: str
) -> None:
    path, body, field = NUL_FIELDS[case]
    with unchanged(live):
        response = hostile(live, "POST", path, body=body)
        assert outcome(response) == (422, "validation_error"), response.text
        fields = [d.get("field") for d in response.json()["error"].get("details", [])]
        assert any(f == field or (f or "").startswith(field + ".") for f in fields), response.text


def test_a_nul_character_in_a_bulk_item_fails_that_item_alone(live: Live) -> None:
    before = live.api.balance("m")["balance"]
    bad = json.dumps({"member_id": "m", "points": 5, "reason": "x", "metadata": {"k": NUL}})
    response = post_raw(live, "/v1/points/award/bulk", bulk_body(bad.encode(), GOOD_ITEM))
    assert_bulk_item_refused(live, response, before)


def test_a_raw_nul_byte_inside_a_json_string_is_invalid_json(live: Live) -> None:
    with unchanged(live):
        body = b'{"member_id":"m","points":5,"reason":"a\x00b"}'
        assert outcome(post_raw(live, "/v1/points/award", body)) == (400, "invalid_json")


@pytest.mark.parametrize(
    "query", ["type=%00", "from=%00", "to=2026-01-01%00", "page=1%00", "per_page=%0010"]
)
def test_a_nul_character_in_a_query_parameter_is_a_validation_error(live: Live, query: str) -> None:
    response = hostile(live, "GET", f"/v1/members/m/transactions?{query}")
    assert outcome(response) == (422, "validation_error"), response.text


# Bytes that are not UTF-8, and lone surrogate escapes

NOT_UTF8 = {
    "an invalid start byte": b"\xff\xfe",
    "an overlong slash": b"\xc0\xaf",
    "a surrogate encoded as bytes (CESU-8)": b"\xed\xa0\x80",
    "a truncated 3-byte sequence": b"\xe2\x82",
    "a code point past U+10FFFF": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("raw", NOT_UTF8.values(), ids=list(NOT_UTF8))
def test_bytes_that_are_not_utf8_are_invalid_json_wherever_they_stand(
    live: Live, raw: bytes
) -> None:
    with unchanged(live):
        bodies = {
            "reason": b'{"member_id":"m","points":5,"reason":"a' + raw + b'"}',
            "metadata key": b'{"member_id":"m","points":5,"reason":"x","metadata":{"'
            + raw
            + b'":1}}',
            "a bulk item": bulk_body(b'{"member_id":"m","points":5,"reason":"' + raw + b'"}'),
        }
        got = {
            where: outcome(post_raw(live, path, body))
            for where, body in bodies.items()
            for path in ["/v1/points/award/bulk" if where == "a bulk item" else "/v1/points/award"]
        }
        assert got == dict.fromkeys(bodies, (400, "invalid_json"))


LONE_SURROGATES = {
    "a lone high surrogate": r"\ud800",
    "a lone low surrogate": r"\udc00",
    "a pair in the wrong order": r"\udc00\ud800",
    "a high surrogate then a letter": r"\ud83dx",
}


@pytest.mark.parametrize("escape", LONE_SURROGATES.values(), ids=list(LONE_SURROGATES))
def test_a_lone_surrogate_escape_is_a_clean_refusal_and_stores_nothing(
    live: Live, escape: str
) -> None:
    text = f'"a{escape}b"'
    with unchanged(live):
        bodies = {
            "/v1/points/award reason": ("/v1/points/award", award_body(reason=text)),
            "/v1/points/award metadata": (
                "/v1/points/award",
                award_body(metadata="{" + text + ":" + text + "}"),
            ),
            "/v1/members name": (
                "/v1/members",
                ('{"member_id":"s1","name":' + text + "}").encode(),
            ),
            "/v1/rewards name": ("/v1/rewards", ('{"points_cost":5,"name":' + text + "}").encode()),
        }
        got = {where: outcome(post_raw(live, path, body)) for where, (path, body) in bodies.items()}
        assert {where: answer in CLEAN_REFUSALS for where, answer in got.items()} == dict.fromkeys(
            bodies, True
        ), got


def test_a_lone_surrogate_in_a_bulk_item_fails_alone_or_refuses_the_request(live: Live) -> None:
    before = live.api.balance("m")["balance"]
    bad = award_body(reason=r'"\ud800"')
    response = post_raw(live, "/v1/points/award/bulk", bulk_body(bad, GOOD_ITEM))
    assert_bulk_item_refused(live, response, before)


def test_a_proper_surrogate_pair_is_stored_and_returned_as_the_character(live: Live) -> None:
    response = post_raw(
        live, "/v1/points/award", award_body("1", metadata=r'{"mood":"\ud83d\ude00"}')
    )
    assert response.status_code == 201, response.text
    transaction = live.api.get(f"/v1/transactions/{response.json()['data']['transaction_id']}")
    assert transaction.json()["data"]["metadata"] == {"mood": "\U0001f600"}


# Duplicate keys: a body that says two things is refused, never read as one of them

DUPLICATES = {
    "points twice": b'{"member_id":"m","points":1,"points":1000,"reason":"x"}',
    "member_id twice": b'{"member_id":"m","member_id":"ghost","points":1,"reason":"x"}',
    "reason twice": b'{"member_id":"m","points":1,"reason":"x","reason":"y"}',
    "a key twice in metadata": award_body(metadata='{"a":1,"a":2}'),
}


@pytest.mark.parametrize("body", DUPLICATES.values(), ids=list(DUPLICATES))
def test_a_duplicate_key_is_a_clean_refusal_and_changes_nothing(live: Live, body: bytes) -> None:
    with unchanged(live):
        response = post_raw(live, "/v1/points/award", body)
        assert outcome(response) in CLEAN_REFUSALS, response.text


BULK_DUPLICATES = {
    "awards twice": b'{"awards":[' + GOOD_ITEM + b'],"awards":[' + GOOD_ITEM + b"]}",
    "atomic twice": b'{"atomic":true,"atomic":false,"awards":[' + GOOD_ITEM + b"]}",
}


@pytest.mark.parametrize("body", BULK_DUPLICATES.values(), ids=list(BULK_DUPLICATES))
def test_a_duplicate_key_in_a_bulk_request_refuses_it_whole(live: Live, body: bytes) -> None:
    with unchanged(live):
        response = post_raw(live, "/v1/points/award/bulk", body)
        assert outcome(response) in CLEAN_REFUSALS, response.text


def test_a_duplicate_key_in_a_bulk_item_fails_alone_or_refuses_the_request(live: Live) -> None:
    before = live.api.balance("m")["balance"]
    twice = b'{"member_id":"m","points":1,"points":1000,"reason":"x"}'
    response = post_raw(live, "/v1/points/award/bulk", bulk_body(twice, GOOD_ITEM))
    assert_bulk_item_refused(live, response, before)


# Repeated query parameters: ambiguous, so refused (never "the last one wins")

REPEATED = {
    "per_page twice": ("/v1/members/m/transactions", "per_page=1&per_page=100", "per_page"),
    "page twice": ("/v1/members/m/transactions", "page=1&page=2", "page"),
    "type twice": ("/v1/members/m/transactions", "type=award&type=deduct", "type"),
    "from twice": ("/v1/members/m/transactions", "from=2020-01-01&from=2030-01-01", "from"),
    "to twice": ("/v1/members/m/transactions", "to=2020-01-01&to=2030-01-01", "to"),
    "members per_page twice": ("/v1/members", "per_page=1&per_page=2", "per_page"),
    "rewards page twice": ("/v1/rewards", "page=1&page=2", "page"),
    "redemptions per_page twice": (
        "/v1/members/m/redemptions",
        "per_page=5&per_page=5",
        "per_page",
    ),
}


@pytest.mark.parametrize("case", REPEATED)
def test_a_repeated_query_parameter_is_a_validation_error_naming_it(live: Live, case: str) -> None:
    path, query, name = REPEATED[case]
    response = hostile(live, "GET", f"{path}?{query}")
    assert outcome(response) == (422, "validation_error"), response.text
    fields = [d.get("field") for d in response.json()["error"].get("details", [])]
    assert name in fields, response.text


# Dates at the edges of the calendar

HISTORY_EDGES = {
    "to the last day": ("to=9999-12-31", {200}),
    "from the first day": ("from=0001-01-01", {200}),
    "to the last second, west of UTC": ("to=9999-12-31T23:59:59-14:00", {200, 422}),
    "from the first second, east of UTC": ("from=0001-01-01T00:00:00%2B14:00", {200, 422}),
    "from the first day to the last": ("from=0001-01-01&to=9999-12-31", {200}),
    "to the last microsecond": ("to=9999-12-31T23:59:59.999999Z", {200}),
}


@pytest.mark.parametrize("case", HISTORY_EDGES)
def test_history_filters_at_the_calendar_edges_answer_cleanly(live: Live, case: str) -> None:
    query, statuses = HISTORY_EDGES[case]
    response = hostile(live, "GET", f"/v1/members/m/transactions?{query}")
    status, code = outcome(response)
    assert status in statuses, response.text
    if status == 200:
        everyone = live.api.history("m")
        assert [row["transaction_id"] for row in response.json()["data"]] == [
            row["transaction_id"] for row in everyone[:20]
        ]
    else:
        assert code == "validation_error"


BEYOND_9999 = "9999-12-31T23:59:59-14:00"  # 10000-01-01T13:59:59Z
BEFORE_0001 = "0001-01-01T00:00:00+14:00"  # 0000-12-31T10:00:00Z


@pytest.mark.parametrize(
    ("field", "moment"),
    [
        ("available_at", BEYOND_9999),
        ("expires_at", BEYOND_9999),
        ("available_at", BEFORE_0001),
        ("expires_at", BEFORE_0001),
    ],
)
def test_an_award_time_outside_the_calendar_in_utc_is_a_validation_error(
    live: Live, field: str, moment: str
) -> None:
    with unchanged(live):
        body = {"member_id": "m", "points": 5, "reason": "x", field: moment}
        response = hostile(live, "POST", "/v1/points/award", body=body)
        assert outcome(response) == (422, "validation_error"), response.text
        fields = [d.get("field") for d in response.json()["error"].get("details", [])]
        assert field in fields, response.text


def test_a_bulk_item_with_a_time_outside_the_calendar_fails_alone(live: Live) -> None:
    before = live.api.balance("m")["balance"]
    bad = award_body(expires_at=f'"{BEYOND_9999}"')
    response = post_raw(live, "/v1/points/award/bulk", bulk_body(bad, GOOD_ITEM))
    assert outcome(response) == (200, None), response.text
    data = response.json()["data"]
    assert [(e["index"], e["error"]["code"]) for e in data["errors"]] == [(0, "validation_error")]
    assert live.api.balance("m")["balance"] == before + 7


def test_the_last_representable_expiry_is_accepted_and_read_back(live: Live) -> None:
    posted = live.api.award("m", 3, expires_at="9999-12-31T23:59:59Z")
    assert posted["expires_at"] == "9999-12-31T23:59:59Z"
    pending = live.api.award("m", 2, available_at="9999-12-30T00:00:00Z")
    assert pending["status"] == "pending"
    balance = live.api.balance("m")
    assert balance["next_expiration"] is not None
    assert balance["next_expiration"]["expires_at"] <= "9999-12-31T23:59:59Z"
    ids = {row["transaction_id"] for row in live.api.history("m", to="9999-12-31")}
    assert {posted["transaction_id"], pending["transaction_id"]} <= ids


# A refused atomic bulk names each bad item's field once: `awards[i].field`, or `awards[i]`


def test_an_atomic_bulk_refusal_names_each_bad_items_field_once(live: Live) -> None:
    items = [
        award_body("0"),
        b'{"member_id":"ghost","points":5,"reason":"x"}',
        award_body(pionts="1"),
        b"[1]",
        GOOD_ITEM,
    ]
    with unchanged(live):
        response = post_raw(live, "/v1/points/award/bulk", bulk_body(*items, atomic=True))
        assert outcome(response) == (422, "validation_error"), response.text
    details = response.json()["error"]["details"]
    assert [(d.get("field"), d.get("code")) for d in details] == [
        ("awards[0].points", "validation_error"),
        ("awards[1]", "member_not_found"),
        ("awards[2].pionts", "validation_error"),
        ("awards[3]", "validation_error"),
    ], response.text
