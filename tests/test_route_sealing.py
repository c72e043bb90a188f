"""Who gets in, route by route of the table (api.md sections 1 and 2).

Each test is parametrised over `ROUTES` itself, so a route added to the table is covered the day
it is added, and fails here until someone writes down how to probe it:

- program B's key naming program A's member, transaction, reward or redemption is answered
  exactly (status, code, message with the id blanked) as an id that exists nowhere, and changes
  nothing on either side; a route that names no object shows B nothing of A's;
- a read key is refused (`403 forbidden`) on every route that writes, with a valid body, with a
  broken one, and with the Idempotency-Key of an earlier write, and nothing changes;
- no key, or an unknown one, is `401 unauthorized` on every route.

`test_tenancy.py` and `test_errors.py` hold the same promises as scenarios; this file holds them
for the whole table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest

from tally.domain import Scope
from tally.http.routes import ROUTES
from tally.http.routes.spec import RouteSpec
from tally.maintenance import run_async
from tally.service import Ledger
from tests.support import Api, everything

A_MEMBER = "alice"  # exists in program A only
A_FRIEND = "alice.friend"  # exists in program A only: the other side of A's transfers
B_MEMBER = "bob"  # exists in program B only
B_FRIEND = "bob.friend"  # exists in program B only: the other side of B's transfers
NOBODY = "nobody"  # exists nowhere
A_KEPT_AWARD = {"member_id": A_MEMBER, "points": 1, "reason": "kept"}  # sent with a key
MISSING = {
    "member": NOBODY,
    "sender": NOBODY,
    "receiver": NOBODY,
    "transaction": "txn_01NOSUCHTRANSACTION0000000",
    "reward": "rwd_01NOSUCHREWARD000000000000",
    "redemption": "red_01NOSUCHREDEMPTION00000000",
    "endpoint": "we_01NOSUCHENDPOINT000000000000",
    "delivery": "dlv_01NOSUCHDELIVERY00000000000",
}
# The fields of a path or a body that name an object, and the kind of object they name.
ID_FIELDS = {
    "member_id": "member",
    # A transfer names two members; each side is probed on its own.
    "from_member_id": "sender",
    "to_member_id": "receiver",
    "transaction_id": "transaction",
    "reward_id": "reward",
    "redemption_id": "redemption",
    "endpoint_id": "endpoint",
    "delivery_id": "delivery",
}
# The code a missing object of each kind is answered with (`{kind}_not_found` unless named).
NOT_FOUND_CODES = {
    "endpoint": "not_found",
    "delivery": "not_found",
    "sender": "member_not_found",
    "receiver": "member_not_found",
}
A_HOOK = "https://8.8.8.8/a-hook"  # a public address: the SSRF guard is on here


@dataclass(frozen=True)
class World:
    """Program A (`acme`, the fixture's write key) and program B, with one of everything each."""

    b_key: str
    a: dict[str, str]  # kind -> an id of A's ("transaction" is a pending award)
    a_posted: str
    b: dict[str, str]  # kind -> an id of B's
    a_pending_idem: str  # the Idempotency-Key of a write A made

    def a_ids(self) -> list[str]:
        return [*self.a.values(), self.a_posted]


@pytest.fixture
def world(api: Api) -> World:
    b_key = api.key_for("other")
    a_endpoint = api.post("/v1/webhook_endpoints", {"url": A_HOOK}).json()["data"]["endpoint_id"]
    b_endpoint = api.post("/v1/webhook_endpoints", {"url": A_HOOK}, key=b_key).json()["data"][
        "endpoint_id"
    ]
    api.member(A_MEMBER, name="Alice of A")
    api.member(A_FRIEND)
    a_posted = api.award(A_MEMBER, 100)["transaction_id"]
    a_pending = api.award(A_MEMBER, 40, available_at="2026-02-01T00:00:00Z")["transaction_id"]
    a_reward = api.post("/v1/rewards", {"name": "A's mug", "points_cost": 10}).json()["data"]
    a_redemption = api.post(
        "/v1/redemptions", {"member_id": A_MEMBER, "reward_id": a_reward["reward_id"]}
    ).json()["data"]
    assert api.post("/v1/points/award", A_KEPT_AWARD, idem="a-wrote-this").status_code == 201
    assert api.post("/v1/members", {"member_id": B_MEMBER}, key=b_key).status_code == 201
    assert api.post("/v1/members", {"member_id": B_FRIEND}, key=b_key).status_code == 201
    b_award = {"member_id": B_MEMBER, "points": 500, "reason": "x"}
    b_posted = api.post("/v1/points/award", b_award, key=b_key).json()["data"]
    b_reward = api.post("/v1/rewards", {"name": "B's cap", "points_cost": 10}, key=b_key)
    b_reward_id = b_reward.json()["data"]["reward_id"]
    b_redemption = api.post(
        "/v1/redemptions", {"member_id": B_MEMBER, "reward_id": b_reward_id}, key=b_key
    ).json()["data"]
    # Each endpoint's deliveries of the events above, made as the dispatcher makes them.
    run_async(api.store, Ledger(api.store).webhooks.fan_out)

    def first_delivery(endpoint_id: str, key: str | None = None) -> str:
        path = f"/v1/webhook_endpoints/{endpoint_id}/deliveries"
        return str(api.get(path, key=key).json()["data"][0]["delivery_id"])

    return World(
        b_key=b_key,
        a={
            "member": A_MEMBER,
            "sender": A_MEMBER,
            "receiver": A_FRIEND,
            "transaction": a_pending,
            "reward": a_reward["reward_id"],
            "redemption": a_redemption["redemption_id"],
            "endpoint": a_endpoint,
            "delivery": first_delivery(a_endpoint),
        },
        a_posted=a_posted,
        b={
            "member": B_MEMBER,
            "sender": B_MEMBER,
            "receiver": B_FRIEND,
            "transaction": b_posted["transaction_id"],
            "reward": b_reward_id,
            "redemption": b_redemption["redemption_id"],
            "endpoint": b_endpoint,
            "delivery": first_delivery(b_endpoint, b_key),
        },
        a_pending_idem="a-wrote-this",
    )


# A valid request for every route, made by program B about its own objects (`b`); a probe
# replaces one id in it by A's, or by one that exists nowhere.

Ids = dict[str, str]
Request = tuple[str, str, Any]

VALID_BODIES: dict[str, Callable[[Ids], Any]] = {
    "POST /v1/members": lambda ids: {"member_id": ids["member"], "name": "B's newcomer"},
    "PATCH /v1/members/{member_id}": lambda ids: {"name": "B's new name"},
    "POST /v1/members/{member_id}/erase": lambda ids: None,
    "POST /v1/points/award": lambda ids: {"member_id": ids["member"], "points": 5, "reason": "x"},
    "POST /v1/points/award/bulk": lambda ids: {
        "awards": [{"member_id": ids["member"], "points": 5, "reason": "x"}]
    },
    "POST /v1/points/deduct": lambda ids: {"member_id": ids["member"], "points": 5, "reason": "x"},
    "POST /v1/points/transfer": lambda ids: {
        "from_member_id": ids["sender"],
        "to_member_id": ids["receiver"],
        "points": 5,
        "reason": "x",
    },
    "PATCH /v1/program": lambda ids: {"points_expire_after_days": 30},
    "POST /v1/rewards": lambda ids: {"name": "Hat", "points_cost": 20},
    "PATCH /v1/rewards/{reward_id}": lambda ids: {"active": False},
    "POST /v1/redemptions": lambda ids: {"member_id": ids["member"], "reward_id": ids["reward"]},
    "POST /v1/transactions/{transaction_id}/cancel": lambda ids: None,
    "POST /v1/transactions/{transaction_id}/reverse": lambda ids: {"reason": "x", "points": 1},
    "POST /v1/redemptions/{redemption_id}/cancel": lambda ids: None,
    "POST /v1/webhook_endpoints": lambda ids: {"url": A_HOOK, "events": ["member.created"]},
    "PATCH /v1/webhook_endpoints/{endpoint_id}": lambda ids: {"description": "B's hook"},
    "DELETE /v1/webhook_endpoints/{endpoint_id}": lambda ids: None,
    "POST /v1/webhook_endpoints/{endpoint_id}/rotate_secret": lambda ids: None,
    "POST /v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/retry": lambda ids: None,
    "POST /v1/webhook_endpoints/{endpoint_id}/recover": lambda ids: {
        "since": "2020-01-01T00:00:00Z"
    },
    # A file, not JSON (`send` posts bytes as text/csv).
    "POST /v1/imports/awards": lambda ids: (
        f"member_id,points,reason\n{ids['member']},5,x\n".encode()
    ),
}
# The ids a file names, by column (a file's body has no schema to find them in).
FILE_ID_FIELDS = {"POST /v1/imports/awards": ["member_id"]}


def name_of(route: RouteSpec) -> str:
    return f"{route.method} {route.path}"


def path_names(route: RouteSpec) -> list[str]:
    return re.findall(r"\{([^}]+)\}", route.path)


def field_names(info: msgspec.inspect.Type) -> list[str]:
    """Every field name of a body's type, and of the objects inside it (a bulk's awards)."""
    if isinstance(info, msgspec.inspect.StructType):
        return [n for f in info.fields for n in [f.name, *field_names(f.type)]]
    if isinstance(info, msgspec.inspect.ListType):
        return field_names(info.item_type)
    if isinstance(info, msgspec.inspect.UnionType):
        return [n for t in info.types for n in field_names(t)]
    return []


def body_id_fields(route: RouteSpec) -> list[str]:
    """The fields of the route's body that name an object (in a bulk award: of its items)."""
    if route.body is None:
        return []
    names = field_names(msgspec.inspect.type_info(route.body))
    return [name for name in dict.fromkeys(names) if name in ID_FIELDS]


def request_for(route: RouteSpec, ids: Ids) -> Request:
    """A valid request to `route` about the objects `ids` (kind -> id)."""
    path = route.path
    for name in path_names(route):
        path = path.replace("{" + name + "}", ids[ID_FIELDS[name]])
    if route.method == "GET":
        return route.method, path, None
    make = VALID_BODIES.get(name_of(route))
    assert make is not None, f"no valid body for {name_of(route)}: add one to VALID_BODIES"
    return route.method, path, make(ids)


def send(api: Api, request: Request, key: str, **headers: str) -> httpx.Response:
    method, path, body = request
    if isinstance(body, bytes):
        headers = {"Content-Type": "text/csv", **headers}
        return api.client.request(method, path, content=body, headers=api.headers(key, **headers))
    return api.client.request(method, path, json=body, headers=api.headers(key, **headers))


_TIMES = re.compile(r'"\d{4}-\d\d-\d\dT[^"]*Z"')


def anonymised(response: httpx.Response, id: str) -> tuple[int, Any]:
    """Status and body with the id asked about, and every timestamp, blanked."""
    text = _TIMES.sub('"<time>"', response.text.replace(id, "<id>"))
    return response.status_code, json.loads(text)


# The ids each route names, found in the route itself (path parameters, body fields); a route
# that names none must be listed here, with why it cannot reveal A's objects.

NAMES_NOTHING = {
    "GET /v1/members": "lists B's own members",
    "GET /v1/program": "shows B's own program",
    "PATCH /v1/program": "changes B's own program",
    "GET /v1/program/report": "adds up B's own program only",
    "GET /v1/rewards": "lists B's own rewards",
    "POST /v1/rewards": "creates one of B's rewards",
    "GET /v1/events": "lists B's own events",
    "GET /v1/webhook_endpoints": "lists B's own webhook endpoints",
    "POST /v1/webhook_endpoints": "creates one of B's webhook endpoints",
    "GET /v1/keys/current": "shows B's own key",
    "GET /v1/exports/transactions": "exports B's own transactions",
}
# Where naming A's id is not a 404: enrolling `alice` in B makes B's own alice, exactly as
# enrolling a name nobody uses would.
NOT_A_LOOKUP = {("POST /v1/members", "member_id"): 201}
BULK = {"POST /v1/points/award/bulk": 200}
# A file naming an unknown member is refused whole (422), the row's own code in the details.
FILE = {"POST /v1/imports/awards": 422}


KEYED_ROUTES = [route for route in ROUTES if route.auth]
"""Every route that takes a key; the others are the operations routes, which reveal no data."""


def test_only_the_operations_routes_take_no_key() -> None:
    assert sorted(name_of(r) for r in ROUTES if not r.auth) == [
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
    ]


def probes_of(route: RouteSpec) -> list[str]:
    return path_names(route) + body_id_fields(route) + FILE_ID_FIELDS.get(name_of(route), [])


@pytest.mark.parametrize("route", KEYED_ROUTES, ids=name_of)
def test_every_route_of_the_table_has_a_probe(route: RouteSpec) -> None:
    named = probes_of(route)
    assert named or name_of(route) in NAMES_NOTHING, (
        f"{name_of(route)} names no object this file knows: teach ID_FIELDS its id, or say in"
        " NAMES_NOTHING why it cannot reveal another program's objects"
    )
    assert not (named and name_of(route) in NAMES_NOTHING)
    assert set(named) <= set(ID_FIELDS)


@pytest.mark.parametrize("route", KEYED_ROUTES, ids=name_of)
def test_another_programs_ids_are_answered_exactly_like_ids_that_exist_nowhere(
    api: Api, world: World, route: RouteSpec
) -> None:
    a_before, b_before = everything(api), everything(api, key=world.b_key)
    if not probes_of(route):
        # Names nothing: whatever it answers B, it mentions none of A's objects.
        response = send(api, request_for(route, world.b), world.b_key)
        assert response.status_code in (200, 201), response.text
        leaked = [i for i in [*world.a_ids(), "Alice of A", "A's mug"] if i in response.text]
        assert leaked == [], response.text
        assert everything(api) == a_before
        return
    for name in probes_of(route):
        kind = ID_FIELDS[name]
        theirs_ids = {**world.b, kind: world.a[kind]}
        missing_ids = {**world.b, kind: MISSING[kind]}
        theirs = send(api, request_for(route, theirs_ids), world.b_key)
        nothing = send(api, request_for(route, missing_ids), world.b_key)
        status = NOT_A_LOOKUP.get(
            (name_of(route), name), BULK.get(name_of(route), FILE.get(name_of(route), 404))
        )
        assert theirs.status_code == status, (name, theirs.text)
        if status == 404:
            code = NOT_FOUND_CODES.get(kind, f"{kind}_not_found")
            assert theirs.json()["error"]["code"] == code, (name, theirs.text)
        elif status == 422:
            details = theirs.json()["error"]["details"]
            assert [d["code"] for d in details] == [f"{kind}_not_found"], name
        else:
            # A bulk item fails alone (the request answers 200), with the item's own 404 code.
            errors = theirs.json()["data"].get("errors", [])
            assert [e["error"]["code"] for e in errors] in ([], [f"{kind}_not_found"]), name
        assert anonymised(theirs, world.a[kind]) == anonymised(nothing, MISSING[kind]), name
        assert everything(api) == a_before, name
        if status in (404, 422):
            assert everything(api, key=world.b_key) == b_before, name


JSON = {"Content-Type": "application/json"}
WRITE_ROUTES = [route for route in KEYED_ROUTES if route.scope is Scope.WRITE]


@pytest.mark.parametrize("route", WRITE_ROUTES, ids=name_of)
def test_a_read_key_is_refused_on_every_write_route_and_changes_nothing(
    api: Api, world: World, route: RouteSpec
) -> None:
    reader = api.key_for("acme", Scope.READ)
    valid = request_for(route, world.a)
    method, path, _ = valid
    before = everything(api)
    answers = {
        "a valid request": send(api, valid, reader),
        "a broken body": api.client.request(
            method, path, content=b"{not json", headers=api.headers(reader, **JSON)
        ),
    }
    if route.method == "POST":
        answers["an Idempotency-Key A used"] = send(
            api, valid, reader, **{"Idempotency-Key": world.a_pending_idem}
        )
        # The key A used for an award, with that very award's request: still no replay.
        replay = ("POST", "/v1/points/award", A_KEPT_AWARD)
        answers["a replay of A's write"] = send(
            api, replay, reader, **{"Idempotency-Key": world.a_pending_idem}
        )
    got = {how: (r.status_code, r.json()["error"]["code"]) for how, r in answers.items()}
    assert got == dict.fromkeys(answers, (403, "forbidden"))
    assert all(r.headers.get("Idempotent-Replayed") is None for r in answers.values())
    assert everything(api) == before


@pytest.mark.parametrize("route", KEYED_ROUTES, ids=name_of)
def test_no_key_or_an_unknown_key_is_unauthorized_on_every_route(
    api: Api, world: World, route: RouteSpec
) -> None:
    method, path, body = request_for(route, world.a)
    before = everything(api)
    unknown = {"Authorization": "Bearer tally_" + "A" * 43}
    sent = {"content": body} if isinstance(body, bytes) else {"json": body}
    answers = {
        "no key": api.client.request(method, path, **sent),
        "an unknown key": api.client.request(method, path, headers=unknown, **sent),
    }
    got = {how: (r.status_code, r.json()["error"]["code"]) for how, r in answers.items()}
    assert got == dict.fromkeys(answers, (401, "unauthorized"))
    assert everything(api) == before
