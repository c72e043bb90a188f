"""A Hypothesis state machine drives a real `tally serve` over HTTP against a small model.

Where `test_ledger_properties.py` runs the app in-process with a movable clock, this one talks
to a real server process (uvicorn, the group commit, the driver pools) on each backend. Random
runs of awards (posted now, or pending until tomorrow and cancelled), deducts, transfers between
members, bulk awards with bad items (invalid fields, unknown members, items that are not
objects; atomic or not), redemptions and their cancels, reversals of awards (with
allow_negative, so into debt and, by later credits, out of it) and of deducts, whole or partial,
and idempotent retries: a request
resent with its Idempotency-Key gets the same status and the same bytes with
`Idempotent-Replayed: true` and has no second effect; the key reused for another request is
`422 idempotency_key_reused`.

Members' profiles change and members are erased (their points stay, they go on earning and
spending; a change after erasure is `409 member_erased`).

After every step, for every member: the balance and every counter equal the model's, and
`balance == lifetime_earned + lifetime_transferred_in - lifetime_redeemed - lifetime_deducted -
lifetime_expired - lifetime_transferred_out`; each reward's stock equals the model's; the members
list shows each profile as the model has it; the program report's outstanding balance and
pending, member count, and period figures summed since the example began match the model. At
the end `tally verify` (the command) exits 0.

The server uses the wall clock, so the model stays honest by keeping time out of it: pending
awards fall due tomorrow and expiring ones in 30 days, long after a run ends. Each example is a
program of its own on the one server, so examples cost no server start.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tally.domain import Scope
from tally.maintenance import create_key, verify
from tests.support import Api, Live, serving, verified

MEMBERS = ("ann", "ben", "cat")
GHOST = "ghost"  # never enrolled
# name: (points_cost, stock, active)
REWARDS: dict[str, tuple[int, int | None, bool]] = {
    "Mug": (30, 4, True),
    "Tote": (15, None, True),
    "Lamp": (10, 5, False),
}
EXAMPLES, STEPS = 50, 30
SOAK_EXAMPLES, SOAK_STEPS = 300, 60  # `pytest -m soak` (TALLY_SOAK=1)

members = st.sampled_from(MEMBERS)
points = st.integers(1, 120)

# Bulk items: a good award, or one of the ways an item fails (the code it fails with).
BAD_ITEMS: dict[str, tuple[Callable[[str], Any], str]] = {
    "unknown member": (
        lambda m: {"member_id": GHOST, "points": 5, "reason": "x"},
        "member_not_found",
    ),
    "zero points": (lambda m: {"member_id": m, "points": 0, "reason": "x"}, "validation_error"),
    "points as text": (
        lambda m: {"member_id": m, "points": "5", "reason": "x"},
        "validation_error",
    ),
    "fractional points": (
        lambda m: {"member_id": m, "points": 1.5, "reason": "x"},
        "validation_error",
    ),
    "blank reason": (lambda m: {"member_id": m, "points": 5, "reason": "   "}, "validation_error"),
    "no reason": (lambda m: {"member_id": m, "points": 5}, "validation_error"),
    "unknown field": (
        lambda m: {"member_id": m, "points": 5, "reason": "x", "pionts": 1},
        "validation_error",
    ),
    "bad member id": (
        lambda m: {"member_id": "a b", "points": 5, "reason": "x"},
        "validation_error",
    ),
    "not an object": (lambda m: [m, 5], "validation_error"),
}
bulk_items = st.lists(
    st.one_of(
        st.tuples(st.just("good"), members, points),
        st.tuples(st.sampled_from(list(BAD_ITEMS)), members, st.just(0)),
    ),
    min_size=1,
    max_size=8,
)
ITEM_FIELD = re.compile(r"^awards\[(\d+)\]")
# A profile change: each field left out, cleared (null) or set.
profile_changes = st.fixed_dictionaries(
    {},
    optional={
        "email": st.none() | st.sampled_from(["ann@example.com", "ben@example.org"]),
        "name": st.none() | st.sampled_from(["Ann", "Ben Ek"]),
    },
)
# The figures the program report sums per period (no expiries here: nothing expires in a run).
MOVES = ("awarded", "deducted", "redeemed", "refunded", "expired", "transferred", "reversed")


@dataclass
class Account:
    """A member as the model sees it."""

    balance: int = 0
    pending: int = 0
    earned: int = 0
    redeemed: int = 0
    deducted: int = 0
    transferred_in: int = 0
    transferred_out: int = 0
    email: str | None = None
    name: str | None = None
    erased: bool = False

    def award(self, points: int) -> None:
        self.balance += points
        self.earned += points

    def as_balance(self, member_id: str) -> dict[str, Any]:
        """What GET /balance must answer, but for `next_expiration`."""
        return {
            "member_id": member_id,
            "balance": self.balance,
            "lifetime_earned": self.earned,
            "lifetime_redeemed": self.redeemed,
            "pending": self.pending,
            "lifetime_deducted": self.deducted,
            "lifetime_expired": 0,
            "lifetime_transferred_in": self.transferred_in,
            "lifetime_transferred_out": self.transferred_out,
        }


@dataclass
class Sent:
    """A write that succeeded with an Idempotency-Key: what to resend and what came back."""

    method: str
    path: str
    content: bytes
    key: str
    status: int
    answer: bytes


@dataclass
class Redemption:
    member: str
    reward: str
    quantity: int
    points: int
    cancelled: bool = False


@dataclass
class Award:
    member: str
    points: int
    pending: bool
    cancelled: bool = False
    reversed: int = 0


@dataclass
class Deduct:
    member: str
    points: int
    reversed: int = 0


@dataclass
class Tally:
    """How much the machine did, for the run's closing line."""

    examples: int = 0
    steps: int = 0
    requests: int = 0
    replays: int = 0


class LiveLedgerMachine(RuleBasedStateMachine):
    live: Live  # set by `run_machine`
    tally = Tally()
    programs = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.program = f"machine{next(self.programs)}"
        key = create_key(
            self.live.store, program=self.program, scope=Scope.WRITE, now=datetime.now(UTC)
        ).secret
        self.api = Api(self.live.api.client, key, store=self.live.store)
        self.accounts = {member: Account() for member in MEMBERS}
        self.started = datetime.now(UTC).date()
        self.moved: Counter[str] = Counter()  # what the report's periods add up to, by figure
        self.stock: dict[str, int | None] = {}
        self.reward_ids: dict[str, str] = {}
        self.awards: dict[str, Award] = {}
        self.deducts: dict[str, Deduct] = {}
        self.redemptions: dict[str, Redemption] = {}
        self.sent: list[Sent] = []
        self.keys = itertools.count()
        self.tally.examples += 1

    # talking to the server

    def send(
        self, method: str, path: str, body: Any = None, *, idem: bool = False
    ) -> httpx.Response:
        """Send `body` as JSON bytes; with `idem`, under a fresh Idempotency-Key, and keep a
        successful answer for the retry rules."""
        content = b"" if body is None else json.dumps(body).encode()
        headers = self.api.headers(**({"Content-Type": "application/json"} if content else {}))
        key = f"{self.program}-{next(self.keys)}"
        if idem:
            headers["Idempotency-Key"] = key
        response = self.api.client.request(method, path, content=content, headers=headers)
        self.tally.requests += 1
        if idem and response.is_success:
            self.sent.append(
                Sent(method, path, content, key, response.status_code, response.content)
            )
        return response

    @staticmethod
    def refused(response: httpx.Response, status: int, *codes: str) -> dict[str, Any]:
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] in codes, response.text
        return error

    # setup

    @initialize()
    def enrol(self) -> None:
        for member in MEMBERS:
            assert self.send("POST", "/v1/members", {"member_id": member}).status_code == 201
        for name, (cost, stock, active) in REWARDS.items():
            body = {"name": name, "points_cost": cost, "stock": stock, "active": active}
            response = self.send("POST", "/v1/rewards", body)
            assert response.status_code == 201, response.text
            self.reward_ids[name] = response.json()["data"]["reward_id"]
            self.stock[name] = stock

    # rules

    @rule(
        member=members,
        points=points,
        later=st.booleans(),
        expires=st.booleans(),
        idem=st.booleans(),
    )
    def award(self, member: str, points: int, later: bool, expires: bool, idem: bool) -> None:
        now = datetime.now(UTC)
        body: dict[str, Any] = {"member_id": member, "points": points, "reason": "award"}
        if later:
            body["available_at"] = (now + timedelta(days=1)).isoformat()
        if expires:
            body["expires_at"] = (now + timedelta(days=30)).isoformat()
        response = self.send("POST", "/v1/points/award", body, idem=idem)
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        account = self.accounts[member]
        if later:
            account.pending += points
        else:
            account.award(points)
            self.moved["awarded"] += points
        assert (data["status"], data["new_balance"]) == (
            "pending" if later else "posted",
            account.balance,
        )
        self.awards[data["transaction_id"]] = Award(member, points, pending=later)

    @rule(member=members, points=points, idem=st.booleans())
    def deduct(self, member: str, points: int, idem: bool) -> None:
        body = {"member_id": member, "points": points, "reason": "deduct"}
        response = self.send("POST", "/v1/points/deduct", body, idem=idem)
        account = self.accounts[member]
        if points > account.balance:
            error = self.refused(response, 422, "insufficient_points")
            assert error["details"][0]["available"] == max(account.balance, 0)  # 0 in debt
            return
        assert response.status_code == 201, response.text
        account.balance -= points
        account.deducted += points
        self.moved["deducted"] -= points
        data = response.json()["data"]
        assert data["new_balance"] == account.balance
        self.deducts[data["transaction_id"]] = Deduct(member, points)

    @rule(sender=members, receiver=members, points=points, idem=st.booleans())
    def transfer(self, sender: str, receiver: str, points: int, idem: bool) -> None:
        body = {
            "from_member_id": sender,
            "to_member_id": receiver,
            "points": points,
            "reason": "transfer",
        }
        response = self.send("POST", "/v1/points/transfer", body, idem=idem)
        source, target = self.accounts[sender], self.accounts[receiver]
        if sender == receiver:
            error = self.refused(response, 422, "validation_error")
            assert error["details"][0]["field"] == "to_member_id"
            return
        if points > source.balance:
            error = self.refused(response, 422, "insufficient_points")
            assert error["details"][0]["available"] == max(source.balance, 0)
            return
        assert response.status_code == 201, response.text
        source.balance -= points
        source.transferred_out += points
        target.balance += points
        target.transferred_in += points
        self.moved["transferred"] += points
        data = response.json()["data"]
        assert (data["from"]["balance_after"], data["to"]["balance_after"]) == (
            source.balance,
            target.balance,
        )

    @rule(items=bulk_items, atomic=st.booleans(), idem=st.booleans())
    def bulk_award(self, items: list[tuple[str, str, int]], atomic: bool, idem: bool) -> None:
        awards = [
            {"member_id": m, "points": p, "reason": "bulk"}
            if kind == "good"
            else BAD_ITEMS[kind][0](m)
            for kind, m, p in items
        ]
        bad = {i: BAD_ITEMS[kind][1] for i, (kind, _, _) in enumerate(items) if kind != "good"}
        response = self.send(
            "POST", "/v1/points/award/bulk", {"awards": awards, "atomic": atomic}, idem=idem
        )
        if atomic and bad:
            error = self.refused(response, 422, "validation_error")
            named: dict[int, set[str]] = {}
            for detail in error["details"]:
                found = ITEM_FIELD.match(detail.get("field", ""))
                assert found, detail
                named.setdefault(int(found.group(1)), set()).add(detail["code"])
            assert named == {i: {code} for i, code in bad.items()}, response.text
            return
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        expected = []
        for i, (_, member, pts) in enumerate(items):
            if i not in bad:
                self.accounts[member].award(pts)
                self.moved["awarded"] += pts
                expected.append((i, member, self.accounts[member].balance))
        assert (data["processed"], data["failed"]) == (len(items) - len(bad), len(bad))
        got = [(t["index"], t["member_id"], t["new_balance"]) for t in data["transactions"]]
        assert got == expected
        assert {e["index"]: e["error"]["code"] for e in data["errors"]} == bad
        for t in data["transactions"]:
            self.awards[t["transaction_id"]] = Award(
                t["member_id"], items[t["index"]][2], pending=False
            )

    @rule(
        member=members,
        reward=st.sampled_from(list(REWARDS)),
        quantity=st.integers(1, 3),
        idem=st.booleans(),
    )
    def redeem(self, member: str, reward: str, quantity: int, idem: bool) -> None:
        cost, _, active = REWARDS[reward]
        body = {"member_id": member, "reward_id": self.reward_ids[reward], "quantity": quantity}
        response = self.send("POST", "/v1/redemptions", body, idem=idem)
        account, stock = self.accounts[member], self.stock[reward]
        problems = [  # in the order docs/api.md gives for the checks
            code
            for code, broken in (
                ("reward_inactive", not active),
                ("out_of_stock", stock is not None and stock < quantity),
                ("insufficient_points", account.balance < cost * quantity),
            )
            if broken
        ]
        if problems:
            self.refused(response, 422, problems[0])
            return
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        assert (data["points"], data["status"]) == (cost * quantity, "completed")
        account.balance -= cost * quantity
        account.redeemed += cost * quantity
        self.moved["redeemed"] -= cost * quantity
        if stock is not None:
            self.stock[reward] = stock - quantity
        self.redemptions[data["redemption_id"]] = Redemption(
            member, reward, quantity, cost * quantity
        )

    @precondition(lambda self: self.redemptions)
    @rule(data=st.data(), idem=st.booleans())
    def cancel_redemption(self, data: st.DataObject, idem: bool) -> None:
        redemption_id = data.draw(st.sampled_from(sorted(self.redemptions)))
        redemption = self.redemptions[redemption_id]
        response = self.send("POST", f"/v1/redemptions/{redemption_id}/cancel", idem=idem)
        if redemption.cancelled:
            self.refused(response, 409, "not_cancellable")
            return
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "cancelled"
        redemption.cancelled = True
        account = self.accounts[redemption.member]
        account.balance += redemption.points
        account.redeemed -= redemption.points
        self.moved["refunded"] += redemption.points
        stock = self.stock[redemption.reward]
        if stock is not None:
            self.stock[redemption.reward] = stock + redemption.quantity

    @precondition(lambda self: self.awards)
    @rule(data=st.data(), idem=st.booleans())
    def cancel_award(self, data: st.DataObject, idem: bool) -> None:
        transaction_id = data.draw(st.sampled_from(sorted(self.awards)))
        award = self.awards[transaction_id]
        response = self.send("POST", f"/v1/transactions/{transaction_id}/cancel", idem=idem)
        if not award.pending or award.cancelled:
            self.refused(response, 409, "not_cancellable")
            return
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "cancelled"
        award.cancelled = True
        self.accounts[award.member].pending -= award.points

    # Award reversals take allow_negative, so whether the award's own points are still there
    # (which this model does not follow) never decides; the balance may fall below zero, and
    # then every spend is refused until credits have paid it back. `share` percent of what is
    # left (None: the default, all of it); over 100 is refused.
    @precondition(lambda self: self.awards)
    @rule(data=st.data(), share=st.none() | st.integers(1, 110), idem=st.booleans())
    def reverse_award(self, data: st.DataObject, share: int | None, idem: bool) -> None:
        transaction_id = data.draw(st.sampled_from(sorted(self.awards)))
        award = self.awards[transaction_id]
        left = award.points - award.reversed
        body: dict[str, Any] = {"reason": "returned", "allow_negative": True}
        if share is not None:
            body["points"] = max(1, left * share // 100)
        response = self.send("POST", f"/v1/transactions/{transaction_id}/reverse", body, idem=idem)
        if award.pending or award.cancelled or left == 0:
            self.refused(response, 409, "not_reversible")
            return
        taken = body.get("points", left)
        if taken > left:
            error = self.refused(response, 422, "validation_error")
            assert error["details"][0]["field"] == "points"
            return
        assert response.status_code == 201, response.text
        account = self.accounts[award.member]
        account.balance -= taken
        account.earned -= taken
        self.moved["reversed"] -= taken
        award.reversed += taken
        reversal = response.json()["data"]
        assert (reversal["points"], reversal["balance_after"], reversal["reverses"]) == (
            -taken,
            account.balance,
            transaction_id,
        )

    @precondition(lambda self: self.deducts)
    @rule(data=st.data(), share=st.none() | st.integers(1, 110), idem=st.booleans())
    def reverse_deduct(self, data: st.DataObject, share: int | None, idem: bool) -> None:
        transaction_id = data.draw(st.sampled_from(sorted(self.deducts)))
        deduct = self.deducts[transaction_id]
        left = deduct.points - deduct.reversed
        body: dict[str, Any] = {"reason": "refunded"}
        if share is not None:
            body["points"] = max(1, left * share // 100)
        response = self.send("POST", f"/v1/transactions/{transaction_id}/reverse", body, idem=idem)
        if left == 0:
            self.refused(response, 409, "not_reversible")
            return
        given = body.get("points", left)
        if given > left:
            self.refused(response, 422, "validation_error")
            return
        assert response.status_code == 201, response.text
        account = self.accounts[deduct.member]
        account.balance += given
        account.deducted -= given
        self.moved["reversed"] += given
        deduct.reversed += given
        assert response.json()["data"]["balance_after"] == account.balance

    @rule(member=members, changes=profile_changes)
    def update_member(self, member: str, changes: dict[str, str | None]) -> None:
        account = self.accounts[member]
        response = self.send("PATCH", f"/v1/members/{member}", changes)
        if account.erased:
            self.refused(response, 409, "member_erased")
            return
        assert response.status_code == 200, response.text
        account.email = changes.get("email", account.email)
        account.name = changes.get("name", account.name)
        assert self.shown(response.json()["data"]) == self.profile(member)

    @rule(member=members)
    def erase_member(self, member: str) -> None:
        """The member's personal data goes for good; its points stay and it goes on earning and
        spending (the other rules and the invariants check)."""
        account = self.accounts[member]
        response = self.send("POST", f"/v1/members/{member}/erase")
        assert response.status_code == 200, response.text
        account.email = account.name = None
        account.erased = True
        assert self.shown(response.json()["data"]) == self.profile(member)

    def profile(self, member: str) -> dict[str, Any]:
        """The member as the model has it (the times as whether it was erased)."""
        account = self.accounts[member]
        return {
            "member_id": member,
            "email": account.email,
            "name": account.name,
            "metadata": None,
            "erased": account.erased,
        }

    @staticmethod
    def shown(member: dict[str, Any]) -> dict[str, Any]:
        """A member as the API shows it, in the model's terms."""
        assert set(member) == {"member_id", "email", "name", "metadata", "created_at", "erased_at"}
        fields = {k: v for k, v in member.items() if k not in ("created_at", "erased_at")}
        return fields | {"erased": member["erased_at"] is not None}

    @precondition(lambda self: self.sent)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """The same request again with its key: the same answer, byte for byte, no effect."""
        sent = data.draw(st.sampled_from(self.sent))
        headers = self.api.headers(**{"Idempotency-Key": sent.key})
        if sent.content:
            headers["Content-Type"] = "application/json"
        response = self.api.client.request(
            sent.method, sent.path, content=sent.content, headers=headers
        )
        self.tally.requests += 1
        self.tally.replays += 1
        assert (response.status_code, response.content) == (sent.status, sent.answer)
        assert response.headers.get("Idempotent-Replayed") == "true"

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), member=members)
    def reuse_key(self, data: st.DataObject, member: str) -> None:
        """The key of an earlier request on another request: refused, nothing changes."""
        sent = data.draw(st.sampled_from(self.sent))
        body = {"member_id": member, "points": 1, "reason": f"reusing {sent.key}"}
        headers = self.api.headers(**{"Idempotency-Key": sent.key})
        response = self.api.client.post("/v1/points/award", json=body, headers=headers)
        self.tally.requests += 1
        self.refused(response, 422, "idempotency_key_reused")

    # invariants

    @invariant()
    def balances_match_the_model(self) -> None:
        if not self.reward_ids:
            return  # before `enrol`
        self.tally.steps += 1
        for member, account in self.accounts.items():
            response = self.api.get(f"/v1/members/{member}/balance")
            assert response.status_code == 200, response.text
            got = response.json()["data"]
            got.pop("next_expiration")
            assert got == account.as_balance(member)
            assert got["balance"] == (
                got["lifetime_earned"]
                + got["lifetime_transferred_in"]
                - got["lifetime_redeemed"]
                - got["lifetime_deducted"]
                - got["lifetime_expired"]
                - got["lifetime_transferred_out"]
            )

    @invariant()
    def members_match_the_model(self) -> None:
        if not self.reward_ids:
            return
        listed = self.api.get("/v1/members", per_page=100).json()["data"]
        assert [self.shown(member) for member in listed] == [
            self.profile(member) for member in self.accounts
        ]

    @invariant()
    def the_report_matches_the_model(self) -> None:
        """What is outstanding (a debt does not lower it), the members, and every period
        figure since the example began, summed, against the model."""
        if not self.reward_ids:
            return
        today = datetime.now(UTC).date()
        response = self.api.get(
            "/v1/program/report",
            **{"from": self.started.isoformat(), "to": today.isoformat()},
        )
        assert response.status_code == 200, response.text
        report = response.json()["data"]
        accounts = self.accounts.values()
        assert report["outstanding"] == {
            "balance": sum(max(account.balance, 0) for account in accounts),
            "pending": sum(account.pending for account in accounts),
        }
        assert report["members"]["total"] == len(self.accounts)
        summed = {move: sum(period[move] for period in report["periods"]) for move in MOVES}
        assert summed == {move: self.moved[move] for move in MOVES}

    @invariant()
    def stock_matches_the_model(self) -> None:
        if not self.reward_ids:
            return
        response = self.api.get("/v1/rewards", per_page=100)
        assert response.status_code == 200, response.text
        stock = {r["name"]: r["stock"] for r in response.json()["data"]}
        assert stock == self.stock

    def teardown(self) -> None:
        assert verify(self.live.store) == []


@pytest.fixture
def live(database_url: str) -> Iterator[Live]:
    with serving(database_url) as live:
        yield live


def run_machine(
    live: Live,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
    *,
    examples: int,
    steps: int,
) -> None:
    LiveLedgerMachine.live = live
    LiveLedgerMachine.tally = Tally()
    run_state_machine_as_test(
        LiveLedgerMachine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    done = LiveLedgerMachine.tally
    record_property("examples", done.examples)
    record_property("steps", done.steps)
    with capsys.disabled():
        print(
            f"\nlive state machine: {done.examples} examples, {done.steps} checked states,"
            f" {done.requests} requests ({done.replays} replays)",
            end=" ",
        )
    assert done.examples >= examples // 2 and done.steps > done.examples
    verified(live.database_url)


def test_random_histories_over_http_keep_every_invariant(
    live: Live,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    run_machine(live, capsys, record_property, examples=EXAMPLES, steps=STEPS)


@pytest.mark.soak
def test_long_random_histories_over_http_keep_every_invariant(
    live: Live,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    run_machine(live, capsys, record_property, examples=SOAK_EXAMPLES, steps=SOAK_STEPS)
