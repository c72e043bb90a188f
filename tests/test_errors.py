"""The error table of api.md section 1, row by row, through HTTP on every backend.

Every refusal is checked for its status, its stable `code`, the `field` at fault (where a field
is at fault), a JSON body that leaks nothing of the server's insides, and, for a refused write,
that nothing the program can read has changed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tally.domain import Scope
from tally.maintenance import create_key
from tally.ports import Store
from tests.support import Api, FakeClock, everything, serve_app

# Helpers: what an error must look like, and everything a program can see.

JSON_CONTENT = {"Content-Type": "application/json"}
LEAKS = ("traceback", "sqlite", "psycopg")
SQL = ("SELECT", "INSERT INTO", "UPDATE ", "DELETE FROM")


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    """The response is the error `code` with `status`, naming `field`, and leaking nothing."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == "application/json"
    text = response.text
    assert not [word for word in LEAKS if word in text.lower()], text
    assert not [word for word in SQL if word in text], text
    body = response.json()
    assert body["success"] is False
    error: dict[str, Any] = body["error"]
    assert error["code"] == code, text
    assert isinstance(error["message"], str) and error["message"].strip()
    details = error.get("details", [])
    assert isinstance(details, list)
    assert all(isinstance(d, dict) and d.get("message") for d in details), text
    if field is not None:
        assert field in [d.get("field") for d in details], text
    return error


def outcome(response: httpx.Response) -> tuple[int, str | None]:
    """(status, error code) of a response, for comparing many routes at once."""
    if response.status_code < 400:
        return response.status_code, None
    code = response.json().get("error", {}).get("code")
    assert_error(response, response.status_code, code)
    return response.status_code, code


def assert_all(got: dict[str, Any], expected: Any) -> None:
    """Every route answered `expected`; the failure lists only those that did not."""
    want = expected if isinstance(expected, dict) else dict.fromkeys(got, expected)
    assert {name: answer for name, answer in got.items() if answer != want[name]} == {}


@contextlib.contextmanager
def program_api(store: Store, clock: FakeClock, **settings: Any) -> Iterator[Api]:
    """The `acme` program served by an app with non-default settings."""
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock, **settings) as client:
        yield Api(client, key, store=store, clock=clock)


def send_raw(api: Api, path: str, content: Any, content_type: str | None) -> httpx.Response:
    headers = api.headers(**({"Content-Type": content_type} if content_type else {}))
    return api.client.post(path, content=content, headers=headers)


# A program with one of everything: member `m` (balance 85, pending 40), a reward, a redemption.


@dataclass(frozen=True)
class World:
    posted: str
    pending: str
    deducted: str
    reward: str
    redemption: str
    redeemed: str


@pytest.fixture
def world(api: Api) -> World:
    api.member("m")
    posted = api.award("m", 100)["transaction_id"]
    pending = api.award("m", 40, available_at="2026-02-01T00:00:00Z")["transaction_id"]
    deducted = api.deduct("m", 5).json()["data"]["transaction_id"]
    reward = api.post("/v1/rewards", {"name": "Mug", "points_cost": 10, "stock": 5})
    assert reward.status_code == 201, reward.text
    reward_id = reward.json()["data"]["reward_id"]
    redemption = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward_id})
    assert redemption.status_code == 201, redemption.text
    data = redemption.json()["data"]
    return World(
        posted, pending, deducted, reward_id, data["redemption_id"], data["transaction_id"]
    )


Request = tuple[str, str, Any]

WRITES: dict[str, Callable[[World], Request]] = {
    "enrol a member": lambda w: ("POST", "/v1/members", {"member_id": "newcomer"}),
    "award": lambda w: (
        "POST",
        "/v1/points/award",
        {"member_id": "m", "points": 5, "reason": "bonus"},
    ),
    "bulk award": lambda w: (
        "POST",
        "/v1/points/award/bulk",
        {"awards": [{"member_id": "m", "points": 5, "reason": "bonus"}]},
    ),
    "deduct": lambda w: (
        "POST",
        "/v1/points/deduct",
        {"member_id": "m", "points": 5, "reason": "x"},
    ),
    "cancel a pending award": lambda w: ("POST", f"/v1/transactions/{w.pending}/cancel", None),
    "change the program": lambda w: ("PATCH", "/v1/program", {"points_expire_after_days": 30}),
    "add a reward": lambda w: ("POST", "/v1/rewards", {"name": "Cap", "points_cost": 20}),
    "change a reward": lambda w: ("PATCH", f"/v1/rewards/{w.reward}", {"active": False}),
    "redeem": lambda w: ("POST", "/v1/redemptions", {"member_id": "m", "reward_id": w.reward}),
    "cancel a redemption": lambda w: ("POST", f"/v1/redemptions/{w.redemption}/cancel", None),
}

READS: dict[str, Callable[[World], str]] = {
    "list members": lambda w: "/v1/members",
    "get a member": lambda w: "/v1/members/m",
    "get a balance": lambda w: "/v1/members/m/balance",
    "get a history": lambda w: "/v1/members/m/transactions",
    "get a transaction": lambda w: f"/v1/transactions/{w.posted}",
    "get the program": lambda w: "/v1/program",
    "list rewards": lambda w: "/v1/rewards",
    "get a reward": lambda w: f"/v1/rewards/{w.reward}",
    "get a redemption": lambda w: f"/v1/redemptions/{w.redemption}",
    "list a member's redemptions": lambda w: "/v1/members/m/redemptions",
}


def send(api: Api, request: Request, headers: dict[str, str] | None = None) -> httpx.Response:
    method, path, body = request
    return api.client.request(
        method, path, json=body, headers=api.headers() if headers is None else headers
    )


@pytest.mark.parametrize("write", WRITES)
def test_every_write_of_the_table_succeeds_with_a_write_key(
    api: Api, world: World, write: str
) -> None:
    response = send(api, WRITES[write](world))
    assert response.status_code in (200, 201), response.text


# Each body route with a valid body; a test changes or breaks it.

MISSING = object()
BASES: dict[str, Request] = {
    "award": ("POST", "/v1/points/award", {"member_id": "m", "points": 5, "reason": "bonus"}),
    "deduct": ("POST", "/v1/points/deduct", {"member_id": "m", "points": 5, "reason": "fix"}),
    "member": ("POST", "/v1/members", {"member_id": "newcomer"}),
    "reward": ("POST", "/v1/rewards", {"name": "Cap", "points_cost": 20}),
    "redemption": ("POST", "/v1/redemptions", {"member_id": "m", "reward_id": "{reward}"}),
    "program": ("PATCH", "/v1/program", {"points_expire_after_days": 30}),
    "reward change": ("PATCH", "/v1/rewards/{reward}", {"active": False}),
    "bulk": (
        "POST",
        "/v1/points/award/bulk",
        {"awards": [{"member_id": "m", "points": 5, "reason": "bonus"}]},
    ),
}


def build(base: str, world: World, changes: dict[str, Any]) -> Request:
    method, path, body = BASES[base]
    merged = {**body, **changes}
    merged = {
        k: (world.reward if v == "{reward}" else v) for k, v in merged.items() if v is not MISSING
    }
    return method, path.format(reward=world.reward), merged


# 400 invalid_json


def as_json(body: Any) -> bytes:
    return json.dumps(body).encode()


def with_bad_utf8(route: str, body: dict[str, Any]) -> bytes:
    """The body with one of its texts replaced by bytes that are not UTF-8."""
    if route == "program":  # no text field: the bytes go where whitespace may stand
        return b"{\xff" + as_json(body)[1:]
    if route == "bulk":
        body = {"awards": [{**body["awards"][0], "reason": "@@"}]}
    elif route == "redemption":
        body = {**body, "metadata": {"note": "@@"}}
    else:
        body = {**body, {"award": "reason", "deduct": "reason"}.get(route, "name"): "@@"}
    return as_json(body).replace(b"@@", b"\xff\xfe")


NOT_JSON_OBJECTS: dict[str, Callable[[str, dict[str, Any]], bytes]] = {
    "truncated JSON": lambda route, body: as_json(body)[:-3],
    "single quotes": lambda route, body: as_json(body).replace(b'"', b"'"),
    "an object followed by junk": lambda route, body: as_json(body) + b" and more",
    "truncated after an unknown field": lambda route, body: as_json({**body, "typo": 1})[:-3],
    "an empty object followed by junk": lambda route, body: b"{} and more",
    "a JSON array": lambda route, body: as_json([body]),
    "a JSON string": lambda route, body: as_json(json.dumps(body)),
    "a JSON number": lambda route, body: b"42",
    "JSON null": lambda route, body: b"null",
    "bytes that are not UTF-8": with_bad_utf8,
}


@pytest.mark.parametrize("form", NOT_JSON_OBJECTS)
def test_a_body_that_is_not_a_json_object_is_invalid_json_on_every_route(
    api: Api, world: World, form: str
) -> None:
    before = everything(api)
    got = {}
    for route in BASES:
        method, path, body = build(route, world, {})
        content = NOT_JSON_OBJECTS[form](route, body)
        got[route] = outcome(
            api.client.request(method, path, content=content, headers=api.headers(**JSON_CONTENT))
        )
    assert_all(got, (400, "invalid_json"))
    assert everything(api) == before


def test_an_empty_body_is_invalid_json_where_a_body_is_needed(api: Api, world: World) -> None:
    # Every field of a member is optional, so an empty POST /v1/members enrols one.
    needing_a_body = [route for route in BASES if route != "member"]
    before = everything(api)
    got = {}
    for route in needing_a_body:
        method, path, _ = build(route, world, {})
        got[route] = outcome(
            api.client.request(method, path, content=b"", headers=api.headers(**JSON_CONTENT))
        )
    assert_all(got, (400, "invalid_json"))
    assert everything(api) == before


# 401 unauthorized

UNKNOWN_KEY = "tally_" + "A" * 43

BAD_AUTHORIZATION: dict[str, str | None] = {
    "no Authorization header": None,
    "an empty Authorization header": "",
    "the Basic scheme": "Basic {key}",
    "the Token scheme": "Token {key}",
    "a key without a scheme": "{key}",
    "Bearer and no key": "Bearer ",
    "a malformed key": "Bearer not-a-tally-key",
    "a truncated key": "Bearer {truncated}",
    "a key with a character too many": "Bearer {key}x",
    "an unknown well-formed key": f"Bearer {UNKNOWN_KEY}",
}


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION.values(), ids=list(BAD_AUTHORIZATION))
def test_a_missing_malformed_or_unknown_key_is_unauthorized_on_every_route(
    api: Api, world: World, authorization: str | None
) -> None:
    headers = {}
    if authorization is not None:
        headers["Authorization"] = authorization.format(key=api.key, truncated=api.key[:-1])
    before = everything(api)
    got = {
        name: outcome(api.client.get(read(world), headers=headers)) for name, read in READS.items()
    }
    got |= {name: outcome(send(api, write(world), headers)) for name, write in WRITES.items()}
    assert_all(got, (401, "unauthorized"))
    assert everything(api) == before


def test_a_revoked_key_is_refused(store: Store, clock: FakeClock) -> None:
    revoked = create_key(store, program="acme", scope=Scope.WRITE, now=clock())
    other = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock, key_cache_seconds=0) as client:
        api = Api(client, revoked.secret, store=store, clock=clock)
        api.member("m")
        api.award("m", 10)
        assert store.transact(lambda tx: tx.keys.revoke(revoked.key_id, now=clock()))
        before = everything(api, key=other)
        for response in (
            api.get("/v1/members/m/balance"),
            api.get("/v1/members"),
            api.post("/v1/points/award", {"member_id": "m", "points": 5, "reason": "x"}),
            api.post("/v1/members", {"member_id": "newcomer"}),
        ):
            assert_error(response, 401, "unauthorized")
        assert everything(api, key=other) == before
        assert api.get("/v1/members/m/balance", key=other).json()["data"]["balance"] == 10


def test_a_revoked_key_stays_refused_with_a_valid_body_and_an_idempotency_key(
    store: Store, clock: FakeClock
) -> None:
    revoked = create_key(store, program="acme", scope=Scope.WRITE, now=clock())
    with serve_app(store, clock=clock, key_cache_seconds=0) as client:
        api = Api(client, revoked.secret, store=store, clock=clock)
        api.member("m")
        body = {"member_id": "m", "points": 5, "reason": "x"}
        assert api.post("/v1/points/award", body, idem="k-1").status_code == 201
        store.transact(lambda tx: tx.keys.revoke(revoked.key_id, now=clock()))
        assert_error(api.post("/v1/points/award", body, idem="k-1"), 401, "unauthorized")


def test_a_revoked_key_is_trusted_from_the_cache_for_half_a_second_of_the_servers_clock(
    store: Store, clock: FakeClock
) -> None:
    """A verified key is cached for 0.5 s (the default), so every server refuses a revoked
    key within a second. The cache runs on the server's clock: here a frozen one, moved."""
    revoked = create_key(store, program="acme", scope=Scope.WRITE, now=clock())
    with serve_app(store, clock=clock) as client:
        api = Api(client, revoked.secret, store=store, clock=clock)
        assert api.get("/v1/members").status_code == 200  # verified, and cached
        assert store.transact(lambda tx: tx.keys.revoke(revoked.key_id, now=clock()))
        assert api.get("/v1/members").status_code == 200  # the cached verification
        clock.advance(seconds=0.499)
        assert api.get("/v1/members").status_code == 200
        clock.advance(seconds=0.001)
        assert_error(api.get("/v1/members"), 401, "unauthorized")
        clock.advance(seconds=30)
        assert_error(api.get("/v1/members"), 401, "unauthorized")


def test_a_cached_key_is_looked_up_again_when_the_clock_goes_back(
    store: Store, clock: FakeClock
) -> None:
    """A clock set back must not stretch how long a verification is trusted."""
    revoked = create_key(store, program="acme", scope=Scope.WRITE, now=clock())
    with serve_app(store, clock=clock) as client:
        api = Api(client, revoked.secret, store=store, clock=clock)
        assert api.get("/v1/members").status_code == 200
        assert store.transact(lambda tx: tx.keys.revoke(revoked.key_id, now=clock()))
        clock.advance(seconds=-1)
        assert_error(api.get("/v1/members"), 401, "unauthorized")


# 403 forbidden


@pytest.mark.parametrize("write", WRITES)
def test_a_read_key_is_forbidden_on_every_write_route(api: Api, world: World, write: str) -> None:
    read_key = api.key_for("acme", Scope.READ)
    before = everything(api)
    response = send(api, WRITES[write](world), api.headers(read_key))
    assert_error(response, 403, "forbidden")
    assert everything(api) == before


def test_a_read_key_can_get_every_read_route(api: Api, world: World) -> None:
    read_key = api.key_for("acme", Scope.READ)
    for name, read in READS.items():
        response = api.get(read(world), key=read_key)
        assert response.status_code == 200, (name, response.text)
        assert response.json()["success"] is True


# 404 not_found and the *_not_found codes

UNKNOWN_ROUTES = [
    ("GET", "/v1/nothing-here"),
    ("POST", "/v1/nothing-here"),
    ("GET", "/v2/members"),
    ("GET", "/v1/members/m/nothing-here"),
    ("POST", "/v1/points"),
    ("GET", "/"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
def test_an_unknown_route_is_not_found(api: Api, method: str, path: str) -> None:
    assert_error(api.client.request(method, path, headers=api.headers()), 404, "not_found")


MISSING_OBJECTS: dict[str, tuple[Callable[[World], Request], str]] = {
    "get an unknown member": (lambda w: ("GET", "/v1/members/ghost", None), "member_not_found"),
    "balance of an unknown member": (
        lambda w: ("GET", "/v1/members/ghost/balance", None),
        "member_not_found",
    ),
    "history of an unknown member": (
        lambda w: ("GET", "/v1/members/ghost/transactions", None),
        "member_not_found",
    ),
    "redemptions of an unknown member": (
        lambda w: ("GET", "/v1/members/ghost/redemptions", None),
        "member_not_found",
    ),
    "award to an unknown member": (
        lambda w: ("POST", "/v1/points/award", {"member_id": "ghost", "points": 5, "reason": "x"}),
        "member_not_found",
    ),
    "deduct from an unknown member": (
        lambda w: ("POST", "/v1/points/deduct", {"member_id": "ghost", "points": 5, "reason": "x"}),
        "member_not_found",
    ),
    "redeem for an unknown member": (
        lambda w: ("POST", "/v1/redemptions", {"member_id": "ghost", "reward_id": w.reward}),
        "member_not_found",
    ),
    "get an unknown transaction": (
        lambda w: ("GET", "/v1/transactions/txn_01NOSUCHTRANSACTION0000000", None),
        "transaction_not_found",
    ),
    "cancel an unknown transaction": (
        lambda w: ("POST", "/v1/transactions/txn_01NOSUCHTRANSACTION0000000/cancel", None),
        "transaction_not_found",
    ),
    "get an unknown reward": (
        lambda w: ("GET", "/v1/rewards/rwd_01NOSUCHREWARD000000000000", None),
        "reward_not_found",
    ),
    "change an unknown reward": (
        lambda w: ("PATCH", "/v1/rewards/rwd_01NOSUCHREWARD000000000000", {"active": False}),
        "reward_not_found",
    ),
    "redeem an unknown reward": (
        lambda w: (
            "POST",
            "/v1/redemptions",
            {"member_id": "m", "reward_id": "rwd_01NOSUCHREWARD000000000000"},
        ),
        "reward_not_found",
    ),
    "get an unknown redemption": (
        lambda w: ("GET", "/v1/redemptions/red_01NOSUCHREDEMPTION00000000", None),
        "redemption_not_found",
    ),
    "cancel an unknown redemption": (
        lambda w: ("POST", "/v1/redemptions/red_01NOSUCHREDEMPTION00000000/cancel", None),
        "redemption_not_found",
    ),
}


@pytest.mark.parametrize("case", MISSING_OBJECTS)
def test_an_unknown_object_is_its_own_not_found_code_and_changes_nothing(
    api: Api, world: World, case: str
) -> None:
    request, code = MISSING_OBJECTS[case]
    before = everything(api)
    assert_error(send(api, request(world)), 404, code)
    assert everything(api) == before


ODD_IDS = {
    "a NUL character": "%00",
    "a quote and SQL": "%27%3B%20DROP%20TABLE%20members%3B--",
    "300 characters": "x" * 300,
    "an emoji": "%F0%9F%92%A5",
    "a percent sign": "100%25",
}

ODD_ID_ROUTES = [
    ("GET", "/v1/members/{id}", "member_not_found"),
    ("GET", "/v1/members/{id}/balance", "member_not_found"),
    ("GET", "/v1/members/{id}/transactions", "member_not_found"),
    ("GET", "/v1/members/{id}/redemptions", "member_not_found"),
    ("GET", "/v1/transactions/{id}", "transaction_not_found"),
    ("POST", "/v1/transactions/{id}/cancel", "transaction_not_found"),
    ("GET", "/v1/rewards/{id}", "reward_not_found"),
    ("PATCH", "/v1/rewards/{id}", "reward_not_found"),
    ("GET", "/v1/redemptions/{id}", "redemption_not_found"),
    ("POST", "/v1/redemptions/{id}/cancel", "redemption_not_found"),
]


@pytest.mark.parametrize("odd_id", ODD_IDS.values(), ids=list(ODD_IDS))
def test_an_odd_id_in_the_path_is_simply_not_found(api: Api, world: World, odd_id: str) -> None:
    before = everything(api)
    got, expected = {}, {}
    for method, path, code in ODD_ID_ROUTES:
        body = {"active": False} if method == "PATCH" else None
        request = (method, path.format(id=odd_id), body)
        got[f"{method} {path}"] = outcome(send(api, request))
        expected[f"{method} {path}"] = (404, code)
    assert_all(got, expected)
    assert everything(api) == before


# 409 member_exists, not_cancellable


def test_enrolling_an_existing_member_id_is_member_exists_and_changes_nothing(
    api: Api, world: World
) -> None:
    before = everything(api)
    response = api.post("/v1/members", {"member_id": "m", "name": "Impostor"})
    assert_error(response, 409, "member_exists")
    assert everything(api) == before


NOT_CANCELLABLE: dict[str, Callable[[World], str]] = {
    "a posted award": lambda w: f"/v1/transactions/{w.posted}/cancel",
    "a deduct": lambda w: f"/v1/transactions/{w.deducted}/cancel",
    "a redeem transaction": lambda w: f"/v1/transactions/{w.redeemed}/cancel",
}


@pytest.mark.parametrize("case", NOT_CANCELLABLE)
def test_cancelling_anything_but_a_pending_award_is_not_cancellable(
    api: Api, world: World, case: str
) -> None:
    before = everything(api)
    assert_error(api.post(NOT_CANCELLABLE[case](world)), 409, "not_cancellable")
    assert everything(api) == before


@pytest.mark.parametrize(
    "path",
    ["/v1/transactions/{w.pending}/cancel", "/v1/redemptions/{w.redemption}/cancel"],
    ids=["a pending award", "a redemption"],
)
def test_a_second_cancel_is_not_cancellable_and_changes_nothing(
    api: Api, world: World, path: str
) -> None:
    first = api.post(path.format(w=world))
    assert first.status_code == 200, first.text
    assert first.json()["data"]["status"] == "cancelled"
    before = everything(api)
    assert_error(api.post(path.format(w=world)), 409, "not_cancellable")
    assert everything(api) == before


# 413 payload_too_large

LIMIT = 1000


def award_body_of(size: int) -> bytes:
    """An award for `m` whose JSON is exactly `size` bytes long."""
    head, tail = b'{"member_id":"m","points":1,"reason":"r","metadata":{"pad":"', b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def in_chunks(content: bytes) -> Iterator[bytes]:
    """A body sent with Transfer-Encoding: chunked, so without a Content-Length."""
    for start in range(0, len(content), 100):
        yield content[start : start + 100]


@pytest.mark.parametrize("chunked", [False, True], ids=["with Content-Length", "chunked"])
def test_a_body_over_the_limit_is_payload_too_large_and_changes_nothing(
    store: Store, clock: FakeClock, chunked: bool
) -> None:
    with program_api(store, clock, max_body_bytes=LIMIT) as api:
        api.member("m")
        before = everything(api)
        for size in (LIMIT + 1, 10 * LIMIT):
            content = award_body_of(size)
            response = send_raw(
                api,
                "/v1/points/award",
                in_chunks(content) if chunked else content,
                "application/json",
            )
            if chunked:
                assert "content-length" not in response.request.headers
            assert_error(response, 413, "payload_too_large")
        assert everything(api) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["with Content-Length", "chunked"])
def test_a_body_of_exactly_the_limit_is_accepted(
    store: Store, clock: FakeClock, chunked: bool
) -> None:
    with program_api(store, clock, max_body_bytes=LIMIT) as api:
        api.member("m")
        content = award_body_of(LIMIT)
        assert len(content) == LIMIT
        body = in_chunks(content) if chunked else content
        response = send_raw(api, "/v1/points/award", body, "application/json")
        assert response.status_code == 201, response.text
        assert api.balance("m")["balance"] == 1


# 415 unsupported_media_type

AWARD_JSON = b'{"member_id": "m", "points": 5, "reason": "bonus"}'

NOT_JSON_MEDIA = {
    "text/plain": (AWARD_JSON, "text/plain"),
    "a form": (b"member_id=m&points=5&reason=bonus", "application/x-www-form-urlencoded"),
    "multipart": (b"--b\r\n\r\nmember_id=m\r\n--b--\r\n", "multipart/form-data; boundary=b"),
    "XML": (b"<award><member_id>m</member_id></award>", "application/xml"),
    "no Content-Type": (AWARD_JSON, None),
}


@pytest.mark.parametrize(("content", "media"), NOT_JSON_MEDIA.values(), ids=list(NOT_JSON_MEDIA))
def test_a_body_that_is_not_declared_json_is_unsupported_media_type(
    api: Api, world: World, content: bytes, media: str | None
) -> None:
    paths = ["/v1/points/award", "/v1/points/deduct", "/v1/members", "/v1/rewards"]
    before = everything(api)
    got = {path: outcome(send_raw(api, path, content, media)) for path in paths}
    assert_all(got, (415, "unsupported_media_type"))
    assert everything(api) == before


def test_a_form_posted_the_way_a_browser_would_is_unsupported_media_type(
    api: Api, world: World
) -> None:
    response = api.client.post(
        "/v1/points/award",
        data={"member_id": "m", "points": "5", "reason": "bonus"},
        headers=api.headers(),
    )
    assert_error(response, 415, "unsupported_media_type")
    assert api.balance("m")["balance"] == 85


@pytest.mark.parametrize(
    "media", ["application/json; charset=utf-8", "application/json;charset=UTF-8"]
)
def test_json_with_a_charset_parameter_is_accepted(api: Api, world: World, media: str) -> None:
    response = send_raw(api, "/v1/points/award", AWARD_JSON, media)
    assert response.status_code == 201, response.text


# 422 validation_error: one row per rule, each on every route the field belongs to.

METADATA_LIMIT = 16 * 1024


def metadata_of(size: int) -> dict[str, str]:
    """A metadata object whose compact JSON is exactly `size` bytes."""
    return {"pad": "x" * (size - len('{"pad":""}'))}


def show(value: Any) -> str:
    if value is MISSING:
        return "missing"
    if isinstance(value, str) and len(value) > 12:
        return f"{len(value)} chars"
    if isinstance(value, dict) and "pad" in value:
        return f"{len(value['pad']) + 10} bytes"
    text = repr(value)
    return text if len(text) <= 16 else f"{text[:12]}…"


POINTS_BAD = [1.5, 500.0, "500", True, None, 0, -5, 1_000_000_001, 10**30, MISSING]
REASON_BAD = [MISSING, "", "   ", "x" * 501, 42, None]
REFERENCE_BAD = ["x" * 201, 7]
METADATA_BAD = [[1, 2], "text", 5, metadata_of(METADATA_LIMIT + 1), metadata_of(20_000)]
MEMBER_ID_BAD = ["has space", "slash/id", "émile", "x" * 65, "", "a#b", 5]
NO_ZONE = ["2026-02-01T00:00:00", "2026-02-01 12:00:00", "2026-02-01", "next week"]

INVALID: list[tuple[str, dict[str, Any], str]] = [
    *[(route, {"points": v}, "points") for route in ("award", "deduct") for v in POINTS_BAD],
    *[(route, {"reason": v}, "reason") for route in ("award", "deduct") for v in REASON_BAD],
    *[
        (route, {"reference": v}, "reference")
        for route in ("award", "deduct")
        for v in REFERENCE_BAD
    ],
    *[
        (route, {"metadata": v}, "metadata")
        for route in ("award", "deduct", "member", "reward", "redemption")
        for v in METADATA_BAD
    ],
    *[
        (route, {"member_id": v}, "member_id")
        for route in ("award", "deduct", "member", "redemption")
        for v in MEMBER_ID_BAD
    ],
    *[(route, {"member_id": MISSING}, "member_id") for route in ("award", "deduct", "redemption")],
    *[(route, {"available_at": v}, "available_at") for route in ("award",) for v in NO_ZONE],
    *[(route, {"expires_at": v}, "expires_at") for route in ("award",) for v in NO_ZONE],
    (
        "award",
        {"available_at": "2026-03-01T00:00:00Z", "expires_at": "2026-02-01T00:00:00Z"},
        "expires_at",
    ),
    ("award", {"pionts": 5}, "pionts"),
    ("deduct", {"note": "x"}, "note"),
    ("member", {"nickname": "x"}, "nickname"),
    ("reward", {"price": 5}, "price"),
    ("redemption", {"qty": 2}, "qty"),
    ("program", {"expire_days": 30}, "expire_days"),
    ("reward change", {"cost": 5}, "cost"),
    ("bulk", {"atomicity": True}, "atomicity"),
    ("reward", {"points_cost": 0}, "points_cost"),
    ("reward", {"points_cost": 2.5}, "points_cost"),
    ("reward", {"points_cost": MISSING}, "points_cost"),
    ("reward", {"name": MISSING}, "name"),
    ("reward", {"name": ""}, "name"),
    ("reward", {"name": "   "}, "name"),
    ("reward", {"stock": -1}, "stock"),
    ("reward", {"active": "yes"}, "active"),
    ("redemption", {"quantity": 0}, "quantity"),
    ("redemption", {"quantity": 1.5}, "quantity"),
    ("redemption", {"reward_id": MISSING}, "reward_id"),
    ("program", {"points_expire_after_days": 0}, "points_expire_after_days"),
    ("program", {"points_expire_after_days": "30"}, "points_expire_after_days"),
    ("reward change", {"points_cost": 0}, "points_cost"),
    ("bulk", {"awards": MISSING}, "awards"),
    ("bulk", {"awards": []}, "awards"),
    ("bulk", {"awards": "everyone"}, "awards"),
    ("bulk", {"atomic": "yes"}, "atomic"),
]


@pytest.mark.parametrize(
    ("route", "changes", "field"),
    INVALID,
    ids=[
        f"{route} {','.join(f'{k}={show(v)}' for k, v in changes.items())}"
        for route, changes, _ in INVALID
    ],
)
def test_an_invalid_field_is_a_validation_error_naming_it_and_changes_nothing(
    api: Api, world: World, route: str, changes: dict[str, Any], field: str
) -> None:
    before = everything(api)
    assert_error(send(api, build(route, world, changes)), 422, "validation_error", field)
    assert everything(api) == before


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("award", {"points": 1}),
    ("award", {"points": 1_000_000_000}),
    ("deduct", {"points": 85}),
    ("award", {"reason": "x" * 500}),
    ("award", {"reference": "x" * 200}),
    ("award", {"metadata": metadata_of(METADATA_LIMIT)}),
    ("award", {"metadata": {}}),
    ("member", {"member_id": "Az09_-.:@" + "x" * 55}),
    ("award", {"available_at": "2026-01-02T14:00:00+02:00"}),
    ("award", {"expires_at": "2026-06-01T00:00:00-05:00"}),
    ("redemption", {"quantity": 2}),
]


@pytest.mark.parametrize(
    ("route", "changes"),
    ACCEPTED,
    ids=[
        f"{route} {','.join(f'{k}={show(v)}' for k, v in changes.items())}"
        for route, changes in ACCEPTED
    ],
)
def test_values_at_the_limits_are_accepted(
    api: Api, world: World, route: str, changes: dict[str, Any]
) -> None:
    response = send(api, build(route, world, changes))
    assert response.status_code == 201, response.text


def test_times_with_an_offset_are_converted_to_utc(api: Api, world: World) -> None:
    changes = {
        "available_at": "2026-01-02T14:00:00+02:00",
        "expires_at": "2026-06-01T00:00:00-05:00",
    }
    created = send(api, build("award", world, changes)).json()["data"]
    fetched = api.get(f"/v1/transactions/{created['transaction_id']}").json()["data"]
    for data in (created, fetched):
        assert (data["available_at"], data["expires_at"]) == (
            "2026-01-02T12:00:00Z",
            "2026-06-01T05:00:00Z",
        )


BAD_QUERIES = [
    ("/v1/members", {"page": "0"}, "page"),
    ("/v1/members", {"per_page": "101"}, "per_page"),
    ("/v1/members", {"per_page": "ten"}, "per_page"),
    ("/v1/rewards", {"page": "-1"}, "page"),
    ("/v1/rewards", {"per_page": "0"}, "per_page"),
    ("/v1/members/m/redemptions", {"per_page": "1000"}, "per_page"),
    ("/v1/members/m/transactions", {"page": "1.5"}, "page"),
    ("/v1/members/m/transactions", {"type": "bonus"}, "type"),
]


@pytest.mark.parametrize(("path", "params", "field"), BAD_QUERIES)
def test_a_query_parameter_out_of_range_is_a_validation_error(
    api: Api, world: World, path: str, params: dict[str, str], field: str
) -> None:
    assert_error(api.get(path, **params), 422, "validation_error", field)


# 422 insufficient_points, out_of_stock, reward_inactive, idempotency_key_reused


def test_deducting_more_than_the_balance_is_insufficient_points_and_changes_nothing(
    api: Api, world: World
) -> None:
    before = everything(api)
    response = api.deduct("m", 86)  # balance 85; the 40 pending points cannot be spent yet
    error = assert_error(response, 422, "insufficient_points")
    assert [d["available"] for d in error["details"] if "available" in d] == [85]
    assert everything(api) == before


def test_redeeming_more_than_the_balance_is_insufficient_points_and_changes_nothing(
    api: Api, world: World
) -> None:
    dear = api.post("/v1/rewards", {"name": "Bike", "points_cost": 86})
    assert dear.status_code == 201, dear.text
    before = everything(api)
    reward_id = dear.json()["data"]["reward_id"]
    response = api.post("/v1/redemptions", {"member_id": "m", "reward_id": reward_id})
    assert_error(response, 422, "insufficient_points")
    assert everything(api) == before


def test_redeeming_more_than_the_stock_is_out_of_stock_and_changes_nothing(
    api: Api, world: World
) -> None:
    before = everything(api)
    response = api.post(
        "/v1/redemptions", {"member_id": "m", "reward_id": world.reward, "quantity": 5}
    )  # 4 left in stock; 50 points are affordable
    assert_error(response, 422, "out_of_stock")
    assert everything(api) == before


def test_redeeming_an_inactive_reward_is_reward_inactive_and_changes_nothing(
    api: Api, world: World
) -> None:
    assert api.patch(f"/v1/rewards/{world.reward}", {"active": False}).status_code == 200
    before = everything(api)
    response = api.post("/v1/redemptions", {"member_id": "m", "reward_id": world.reward})
    assert_error(response, 422, "reward_inactive")
    assert everything(api) == before


def test_reusing_an_idempotency_key_for_another_request_is_refused_and_changes_nothing(
    api: Api, world: World
) -> None:
    body = {"member_id": "m", "points": 5, "reason": "bonus"}
    assert api.post("/v1/points/award", body, idem="order-1").status_code == 201
    before = everything(api)
    response = api.post("/v1/points/award", {**body, "points": 6}, idem="order-1")
    assert_error(response, 422, "idempotency_key_reused")
    assert everything(api) == before


# No stack trace or SQL ever reaches a client, whatever is sent.

NUL_TEXT = [
    ("award", "reason"),
    ("award", "reference"),
    ("member", "name"),
    ("reward", "name"),
]


@pytest.mark.parametrize(("route", "field"), NUL_TEXT)
def test_text_with_a_nul_character_is_stored_or_refused_never_a_server_error(
    api: Api, world: World, route: str, field: str
) -> None:
    response = send(api, build(route, world, {field: "a\u0000b"}))
    if response.status_code == 201:
        assert response.json()["data"][field] == "a\u0000b"
    else:
        assert_error(response, 422, "validation_error", field)


HOSTILE = [
    ("POST", "/v1/points/award", {"member_id": "m' OR '1'='1", "points": 5, "reason": "x"}),
    ("POST", "/v1/points/award", {"member_id": "m", "points": 2**63, "reason": "x"}),
    ("POST", "/v1/points/award", {"member_id": "m", "points": -(2**63) - 1, "reason": "x"}),
    ("POST", "/v1/points/deduct", {"member_id": "m", "points": 10**30, "reason": "x"}),
    ("POST", "/v1/members", {"member_id": "x'); DROP TABLE members; --"}),
    ("POST", "/v1/redemptions", {"member_id": "m", "reward_id": "' OR 1=1 --"}),
    ("POST", "/v1/redemptions", {"member_id": "m", "reward_id": "x" * 10_000}),
    ("GET", "/v1/members/m/transactions?from=2026-01-01T00:00:00%2B99:00", None),
    ("GET", "/v1/members/m/transactions?page=99999999999999999999", None),
    ("GET", "/v1/members?per_page=1e3", None),
]


@pytest.mark.parametrize(("method", "path", "body"), HOSTILE)
def test_hostile_input_gets_a_clean_client_error(
    api: Api, world: World, method: str, path: str, body: Any
) -> None:
    before = everything(api)
    response = send(api, (method, path, body))
    assert 400 <= response.status_code < 500, response.text
    assert_error(response, response.status_code, response.json()["error"]["code"])
    assert everything(api) == before
