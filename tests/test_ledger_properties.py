"""A Hypothesis state machine drives the real HTTP API in-process against a small model.

Random runs of awards (now, later, expiring), deducts, transfers, redemptions, cancels,
reversals of awards (partial, whole, into debt) and of deducts, policy changes, sweeps, clock
moves, switches between two keys, enrol_on_award on and off with awards (alone or in a bulk) and
transfers to ids that are not members yet, profile changes and erasures. After every step, for
every member: the balance and its counters match the model; `balance == earned + transferred_in
- redeemed - deducted - expired - transferred_out`; the lots hold what the model says (so their
remainders sum to the balance, or to nothing while the member owes points); the history's
balance_after chain adds up in ledger order; each row names the key that made it (`system` for
an expiry); the members list shows each profile as the model has it (an erased member's empty
for good, its points kept); the program report's outstanding, expiring and member figures match
the model and its periods add up, per row type, to what the model moved since the start; and
`verify` finds nothing. Once the clock leaves a moment, each balance `as_of` it, and as of the
last instant before anything followed, is what the model recorded there; a rule asks `as_of`
older moments, now (the balance) and before enrolment (zeros).

The model keeps its own lots and spends them in the order the spec gives: soonest expiry
first, never-expiring last, oldest (first posted) first among equals. A reversal takes from its
award's own lot first, then (with allow_negative) from the other lots in spend order, and the
rest is a debt, which every later credit pays first.
Each example gets a fresh database copied from a migrated template (SQLite always; a smaller
run on PostgreSQL when TALLY_TEST_POSTGRES_URL is set).
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tally.domain import Scope
from tally.maintenance import create_key, run_async, verify
from tally.ports import Store
from tally.service import Ledger
from tally.storage import open_store
from tests.conftest import POSTGRES_URL
from tests.ledger_support import (
    assert_ledger_order,
    counters_add_up,
    full_history,
    lot_remainders,
    stamp,
)
from tests.support import Api, FakeClock, postgres_copy, serve_app

START = datetime(2026, 1, 1, 12, tzinfo=UTC)
MEMBERS = ("alice", "bob")
NEWCOMERS = ("carol", "dave")  # unknown until an award enrols them (with enrol_on_award on)
# name: (points_cost, stock, active)
REWARDS: dict[str, tuple[int, int | None, bool]] = {
    "Mug": (40, 3, True),
    "Tote bag": (25, None, True),
    "Retired lamp": (10, 5, False),
}

points = st.integers(1, 300)
hours = st.sampled_from([1, 2, 12, 24, 24 * 3, 24 * 10, 24 * 30, 24 * 60])
# A profile change: each field left out, cleared (null) or set.
profile_changes = st.fixed_dictionaries(
    {},
    optional={
        "email": st.none() | st.sampled_from(["ann@example.com", "bo@example.org"]),
        "name": st.none() | st.sampled_from(["Ann", "Bo Ek"]),
    },
)
# When balance_as_of asks: at an earlier moment the clock stopped at, the instant before
# anything happened after it, now, or before enrolment.
MOMENTS = ("earlier", "in between", "now", "before")
# The figures a report sums, by period field, signed as in history.
MOVES = ("awarded", "deducted", "redeemed", "refunded", "expired", "transferred", "reversed")

DatabaseFactory = Callable[[], contextlib.AbstractContextManager[str]]


# The model


@dataclass
class Pending:
    member: str
    points: int
    available_at: datetime
    expires_at: datetime | None
    posted: bool = False
    cancelled: bool = False


@dataclass
class Lot:
    remaining: int
    expires_at: datetime | None
    position: int  # when it was posted, among the member's lots

    @property
    def spend_order(self) -> tuple[bool, datetime, int]:
        return (self.expires_at is None, self.expires_at or START, self.position)


@dataclass
class Account:
    """A member as the model sees it."""

    created_at: datetime
    lots: list[Lot] = field(default_factory=list)
    pending: int = 0
    earned: int = 0
    redeemed: int = 0
    deducted: int = 0
    expired: int = 0
    transferred_in: int = 0
    transferred_out: int = 0
    rows: int = 0
    debt: int = 0  # points reversals took beyond what the lots held
    made_by: Counter[str] = field(default_factory=Counter)  # rows by `created_by`
    email: str | None = None
    name: str | None = None
    erased_at: datetime | None = None

    def figures(self) -> dict[str, Any]:
        """The balance's fields (all but member_id) as the model has them."""
        return {
            "balance": self.balance,
            "pending": self.pending,
            "lifetime_earned": self.earned,
            "lifetime_redeemed": self.redeemed,
            "lifetime_deducted": self.deducted,
            "lifetime_expired": self.expired,
            "lifetime_transferred_in": self.transferred_in,
            "lifetime_transferred_out": self.transferred_out,
            "next_expiration": self.next_expiration(),
        }

    def profile(self, member_id: str) -> dict[str, Any]:
        """The member as GET /v1/members/{id} shows it."""
        return {
            "member_id": member_id,
            "email": self.email,
            "name": self.name,
            "metadata": None,
            "created_at": stamp(self.created_at),
            "erased_at": self.erased_at and stamp(self.erased_at),
        }

    def row(self, by: str) -> None:
        """One more ledger row, made by the key `by` (or by `system`)."""
        self.rows += 1
        self.made_by[by] += 1

    @property
    def balance(self) -> int:
        return sum(lot.remaining for lot in self.lots) - self.debt

    def open_lots(self) -> list[Lot]:
        """Lots that still hold points, soonest expiry first, never last, oldest first."""
        return sorted((lot for lot in self.lots if lot.remaining), key=lambda lot: lot.spend_order)

    def add_lot(self, points: int, expires_at: datetime | None) -> Lot:
        """A credit's new lot, after it paid what it could of the debt."""
        paid = min(points, self.debt)
        if paid:
            event("a credit paid a debt back")
        self.debt -= paid
        lot = Lot(points - paid, expires_at, len(self.lots))
        self.lots.append(lot)
        return lot

    def take_back(self, lot: Lot, points: int) -> None:
        """A reversal of an award: its own lot first, then the others in spend order, then the
        rest becomes a debt."""
        own = min(points, lot.remaining)
        lot.remaining -= own
        rest = points - own
        held = sum(other.remaining for other in self.lots)
        if rest and held:
            self.spend(min(rest, held))
        if rest > held:
            event("a reversal made a debt")
            self.debt += rest - held

    def spend(self, points: int) -> dict[datetime | None, int]:
        """Take `points` in spend order; what was taken, by expiry date, in the order taken."""
        assert points <= self.balance
        taken: dict[datetime | None, int] = {}
        for lot in self.open_lots():
            take = min(points, lot.remaining)
            lot.remaining -= take
            points -= take
            if take:
                taken[lot.expires_at] = taken.get(lot.expires_at, 0) + take
        return taken

    def expire(self, now: datetime) -> None:
        """What is left of each lot due by `now` leaves as one expire row."""
        for lot in self.open_lots():
            if lot.expires_at is not None and lot.expires_at <= now:
                event("a lot expired")
                self.expired += lot.remaining
                self.row("system")
                lot.remaining = 0

    def next_expiration(self) -> dict[str, Any] | None:
        expiring = [lot for lot in self.open_lots() if lot.expires_at is not None]
        if not expiring:
            return None
        soonest = expiring[0].expires_at
        assert soonest is not None
        points = sum(lot.remaining for lot in expiring if lot.expires_at == soonest)
        return {"points": points, "expires_at": stamp(soonest)}


NOTHING = Account(START).figures()  # every figure before a member was enrolled


@dataclass
class Award:
    """A posted award as reversals see it: its member, points, lot and what was reversed."""

    member: str
    points: int
    lot: Lot
    reversed: int = 0


@dataclass
class Deduct:
    member: str
    points: int
    reversed: int = 0


@dataclass
class Redemption:
    member: str
    reward: str
    quantity: int
    points: int
    cancelled: bool = False


# The machine


class LedgerMachine(RuleBasedStateMachine):
    examples = 0
    steps = 0

    posted_awards = Bundle("posted_awards")
    pending_awards = Bundle("pending_awards")
    redemptions = Bundle("redemptions")
    deducts = Bundle("deducts")
    enrolled = Bundle("enrolled")  # member ids: alice and bob, then the newcomers enrolled

    def __init__(self, make_database: DatabaseFactory) -> None:
        super().__init__()
        LedgerMachine.examples += 1
        self.resources = contextlib.ExitStack()
        url = self.resources.enter_context(make_database())
        self.store: Store = open_store(url)
        self.resources.callback(self.store.close)
        self.clock = FakeClock(START)
        # Two write keys, the writes switching between them: each row names the key it came from.
        self.keys = [create_key(self.store, program="acme", scope=Scope.WRITE, now=START)]
        self.keys.append(create_key(self.store, program="acme", scope=Scope.WRITE, now=START))
        self.key_id = self.keys[0].key_id
        client = self.resources.enter_context(serve_app(self.store, clock=self.clock))
        self.api = Api(client, self.keys[0].secret, store=self.store, clock=self.clock)
        self.accounts = {member: Account(START) for member in MEMBERS}
        for member in MEMBERS:
            self.api.member(member)
        self.reward_ids: dict[str, str] = {}
        self.stock: dict[str, int | None] = {}
        for name, (cost, stock, active) in REWARDS.items():
            body = {"name": name, "points_cost": cost, "stock": stock, "active": active}
            response = self.api.post("/v1/rewards", body)
            assert response.status_code == 201, response.text
            self.reward_ids[name] = response.json()["data"]["reward_id"]
            self.stock[name] = stock
        self.policy_days: int | None = None
        self.pending: dict[str, Pending] = {}
        self.redeemed: dict[str, Redemption] = {}
        self.awards: dict[str, Award] = {}  # posted ones, by transaction id
        self.deducted: dict[str, Deduct] = {}
        self.enrol_on_award = False
        self.moved: Counter[str] = Counter()  # what the report sums, but expiries and transfers
        # Each member's figures as they stood at each moment the clock stopped at (the last
        # state recorded at a moment is final once the clock has moved on), and when the next
        # thing was due to post or expire after it.
        self.past: dict[datetime, dict[str, dict[str, Any]]] = {}
        self.next_due: dict[datetime, datetime | None] = {}

    @initialize(target=enrolled)
    def enrol(self) -> Any:
        return multiple(*MEMBERS)

    def teardown(self) -> None:
        self.resources.close()

    # the model's clock

    @property
    def now(self) -> datetime:
        return self.clock.now

    def catch_up(self) -> None:
        """Post what has become available and expire what is due, as the server does first."""
        # Awards post in the order they became available, then in the order they were made.
        for transaction_id, pending in sorted(
            self.pending.items(), key=lambda item: item[1].available_at
        ):
            if pending.posted or pending.cancelled or pending.available_at > self.now:
                continue
            account = self.accounts[pending.member]
            lot = account.add_lot(pending.points, pending.expires_at)
            self.awards[transaction_id] = Award(pending.member, pending.points, lot)
            account.pending -= pending.points
            account.earned += pending.points
            self.moved["awarded"] += pending.points
            pending.posted = True
            event("a pending award posted")
        for account in self.accounts.values():
            account.expire(self.now)

    def policy_expiry(self, effective_at: datetime) -> datetime | None:
        if self.policy_days is None:
            return None
        return effective_at + timedelta(days=self.policy_days)

    def due_times(self) -> list[datetime]:
        later = [p.available_at for p in self.pending.values() if not (p.posted or p.cancelled)]
        later += [
            lot.expires_at
            for account in self.accounts.values()
            for lot in account.open_lots()
            if lot.expires_at is not None
        ]
        return sorted(when for when in later if when > self.now)

    # rules

    def _award(self, member: str, points: int, **times: datetime) -> dict[str, Any]:
        self.catch_up()
        body = {"member_id": member, "points": points, "reason": "machine award"}
        body |= {name: stamp(when) for name, when in times.items()}
        response = self.api.post("/v1/points/award", body)
        assert response.status_code == 201, response.text
        self.accounts[member].row(self.key_id)
        if self.accounts[member].erased_at:
            event("an erased member earned")
        self.moved["awarded"] += points if "available_at" not in times else 0
        return dict(response.json()["data"])

    @rule(target=posted_awards, member=enrolled, points=points)
    def award(self, member: str, points: int) -> str:
        data = self._award(member, points)
        expires_at = self.policy_expiry(self.now)
        account = self.accounts[member]
        lot = account.add_lot(points, expires_at)
        self.awards[data["transaction_id"]] = Award(member, points, lot)
        account.earned += points
        assert (data["status"], data["new_balance"]) == ("posted", account.balance)
        assert data["expires_at"] == (expires_at and stamp(expires_at))
        return str(data["transaction_id"])

    @rule(target=posted_awards, member=enrolled, points=points, lasts=hours)
    def award_with_expiry(self, member: str, points: int, lasts: int) -> str:
        expires_at = self.now + timedelta(hours=lasts)
        data = self._award(member, points, expires_at=expires_at)
        account = self.accounts[member]
        lot = account.add_lot(points, expires_at)
        self.awards[data["transaction_id"]] = Award(member, points, lot)
        account.earned += points
        assert (data["status"], data["new_balance"]) == ("posted", account.balance)
        return str(data["transaction_id"])

    @rule(
        target=pending_awards,
        member=enrolled,
        points=points,
        wait=hours,
        lasts=st.none() | hours,
    )
    def pending_award(self, member: str, points: int, wait: int, lasts: int | None) -> str:
        available_at = self.now + timedelta(hours=wait)
        times = {"available_at": available_at}
        if lasts is not None:
            times["expires_at"] = available_at + timedelta(hours=lasts)
        data = self._award(member, points, **times)
        expires_at = times.get("expires_at") or self.policy_expiry(available_at)
        account = self.accounts[member]
        account.pending += points
        assert (data["status"], data["new_balance"]) == ("pending", account.balance)
        self.pending[data["transaction_id"]] = Pending(member, points, available_at, expires_at)
        return str(data["transaction_id"])

    @rule(target=deducts, member=enrolled, points=st.integers(1, 600))
    def deduct(self, member: str, points: int) -> Any:
        self.catch_up()
        account = self.accounts[member]
        response = self.api.deduct(member, points)
        if points > account.balance:
            event("deduct refused in debt" if account.debt else "deduct refused")
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "insufficient_points"
            return multiple()
        event("deduct made")
        assert response.status_code == 201, response.text
        account.spend(points)
        account.deducted += points
        account.row(self.key_id)
        self.moved["deducted"] -= points
        data = response.json()["data"]
        assert data["new_balance"] == account.balance
        self.deducted[data["transaction_id"]] = Deduct(member, points)
        return data["transaction_id"]

    @rule(target=deducts, member=enrolled)
    def deduct_everything(self, member: str) -> Any:
        """Spend the whole balance: a reversal after it needs allow_negative and makes a debt."""
        self.catch_up()
        return self.deduct(member, max(1, self.accounts[member].balance))

    # A share of what is left to reverse (None: the default, all of it); over 100 is refused.
    @rule(
        transaction_id=st.one_of(posted_awards, pending_awards),
        share=st.none() | st.integers(1, 110),
        allow_negative=st.booleans(),
    )
    def reverse_award(self, transaction_id: str, share: int | None, allow_negative: bool) -> None:
        self.catch_up()
        award = self.awards.get(transaction_id)
        left = 0 if award is None else award.points - award.reversed
        points = None if share is None else max(1, left * share // 100)
        body: dict[str, Any] = {"reason": "machine reversal", "allow_negative": allow_negative}
        if points is not None:
            body["points"] = points
        response = self.api.post(f"/v1/transactions/{transaction_id}/reverse", body)
        if award is None or left == 0:
            event("reversal of a pending, cancelled or reversed award refused")
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "not_reversible"
            return
        taken = left if points is None else points
        if taken > left:
            event("reversal of more than is left refused")
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "validation_error"
            return
        if taken > award.lot.remaining and not allow_negative:
            event("reversal of spent points refused")
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "insufficient_points"
            return
        event("award reversed")
        assert response.status_code == 201, response.text
        account = self.accounts[award.member]
        account.take_back(award.lot, taken)
        account.earned -= taken
        account.row(self.key_id)
        self.moved["reversed"] -= taken
        award.reversed += taken
        data = response.json()["data"]
        assert (data["points"], data["balance_after"]) == (-taken, account.balance)

    @rule(transaction_id=posted_awards)
    def claw_back(self, transaction_id: str) -> None:
        """Reverse what is left of an award, spent or not (a returned order)."""
        self.reverse_award(transaction_id, None, allow_negative=True)

    @rule(transaction_id=deducts, share=st.none() | st.integers(1, 110))
    def reverse_deduct(self, transaction_id: str, share: int | None) -> None:
        self.catch_up()
        deduct = self.deducted[transaction_id]
        left = deduct.points - deduct.reversed
        points = None if share is None else max(1, left * share // 100)
        body: dict[str, Any] = {"reason": "machine reversal"}
        if points is not None:
            body["points"] = points
        response = self.api.post(f"/v1/transactions/{transaction_id}/reverse", body)
        if left == 0:
            event("reversal of a reversed deduct refused")
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "not_reversible"
            return
        given = left if points is None else points
        if given > left:
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "validation_error"
            return
        event("deduct reversed")
        assert response.status_code == 201, response.text
        account = self.accounts[deduct.member]
        account.add_lot(given, self.policy_expiry(self.now))
        account.deducted -= given
        account.row(self.key_id)
        self.moved["reversed"] += given
        deduct.reversed += given
        assert response.json()["data"]["balance_after"] == account.balance

    @initialize(on=st.booleans())
    def start_with_enrol_on_award(self, on: bool) -> None:
        self.set_enrol_on_award(on)

    @rule(on=st.booleans())
    def set_enrol_on_award(self, on: bool) -> None:
        response = self.api.patch("/v1/program", {"enrol_on_award": on})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["enrol_on_award"] is on
        self.enrol_on_award = on

    @rule(target=enrolled, newcomer=st.sampled_from(NEWCOMERS), points=points, bulk=st.booleans())
    def award_to_a_newcomer(self, newcomer: str, points: int, bulk: bool) -> Any:
        """An award (alone or as a bulk item) to an id that may not be a member yet: with
        enrol_on_award on, it enrols the member; off, it is 404 member_not_found."""
        self.catch_up()
        known = newcomer in self.accounts
        item = {"member_id": newcomer, "points": points, "reason": "machine award"}
        if bulk:
            response = self.api.post("/v1/points/award/bulk", {"awards": [item]})
            assert response.status_code == 200, response.text
            answer = response.json()["data"]
            refused = [error["error"]["code"] for error in answer["errors"]]
            data = answer["transactions"][0] if answer["transactions"] else None
        else:
            response = self.api.post("/v1/points/award", item)
            refused = [] if response.status_code == 201 else [response.json()["error"]["code"]]
            data = response.json()["data"] if response.status_code == 201 else None
        if not known and not self.enrol_on_award:
            event("award to an unknown id refused")
            assert refused == ["member_not_found"], response.text
            return multiple()
        event("award to a known newcomer" if known else "award enrolled a newcomer")
        assert data is not None and not refused, response.text
        if not known:
            self.accounts[newcomer] = Account(self.now)
        account = self.accounts[newcomer]
        account.row(self.key_id)
        expires_at = self.policy_expiry(self.now)
        lot = account.add_lot(points, expires_at)
        self.awards[data["transaction_id"]] = Award(newcomer, points, lot)
        account.earned += points
        self.moved["awarded"] += points
        assert data["new_balance"] == account.balance
        return multiple() if known else newcomer

    @rule(
        target=enrolled,
        sender=enrolled,
        newcomer=st.sampled_from(NEWCOMERS),
        share=st.integers(1, 120),
    )
    def transfer_to_a_newcomer(self, sender: str, newcomer: str, share: int) -> Any:
        """A transfer to an id that may not be a member yet: with enrol_on_award on it enrols
        the receiver, unless the transfer is refused; off, it is 404 member_not_found."""
        if newcomer in self.accounts:
            self.transfer(sender, newcomer, share, oneself=1)
            return multiple()
        self.catch_up()
        source = self.accounts[sender]
        points = max(1, source.balance * share // 100)
        body = {
            "from_member_id": sender,
            "to_member_id": newcomer,
            "points": points,
            "reason": "machine transfer",
        }
        response = self.api.post("/v1/points/transfer", body)
        if not self.enrol_on_award:
            event("transfer to an unknown id refused")
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "member_not_found"
            return multiple()
        if points > source.balance:
            event("refused transfer enrolled no one")
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "insufficient_points"
            return multiple()
        event("transfer enrolled a newcomer")
        assert response.status_code == 201, response.text
        self.accounts[newcomer] = Account(self.now)
        self.transferred(source, self.accounts[newcomer], points, response.json()["data"])
        return newcomer

    @rule(member=enrolled, changes=profile_changes)
    def update_member(self, member: str, changes: dict[str, str | None]) -> None:
        account = self.accounts[member]
        response = self.api.patch(f"/v1/members/{member}", changes)
        if account.erased_at:
            event("update of an erased member refused")
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "member_erased"
            return
        event("member updated" if changes else "member updated with nothing")
        assert response.status_code == 200, response.text
        account.email = changes.get("email", account.email)
        account.name = changes.get("name", account.name)
        assert response.json()["data"] == account.profile(member)

    @rule(member=enrolled)
    def erase_member(self, member: str) -> None:
        """Erase the member's personal data; its points and history stay (checked after every
        step), and it goes on earning and spending."""
        account = self.accounts[member]
        response = self.api.post(f"/v1/members/{member}/erase")
        assert response.status_code == 200, response.text
        event("member erased again" if account.erased_at else "member erased")
        account.email = account.name = None
        account.erased_at = account.erased_at or self.now
        assert response.json()["data"] == account.profile(member)

    @rule(member=enrolled, when=st.sampled_from(MOMENTS), pick=st.integers())
    def balance_as_of(self, member: str, when: str, pick: int) -> None:
        """The balance at an earlier moment the model recorded (one the clock has left, so
        nothing more happens at it), or at the last instant before the next recorded moment or
        the next posting or expiry after it (so still as it was), now, or before the member was
        enrolled (all zeros)."""
        self.catch_up()
        account = self.accounts[member]
        recorded = sorted(self.past)
        moments = [m for m in recorded if m < self.now and member in self.past[m]]
        if when in ("earlier", "in between") and moments:
            event(f"balance as of {when}")
            moment = moments[pick % len(moments)]
            expected = self.past[moment][member]
            if when == "in between":
                following = recorded[recorded.index(moment) + 1]
                due = self.next_due[moment]
                moment = min(following, due or following) - timedelta(microseconds=1)
        elif when == "before":
            event("balance as of before enrolment")
            moment, expected = account.created_at - timedelta(microseconds=1), NOTHING
        else:
            event("balance as of now")
            moment, expected = self.now, account.figures()
        self.assert_balance_as_of(member, moment, expected)

    # Mostly between two members, to oneself (refused) one time in five when both draws agree;
    # `share` percent of the sender's balance, so most succeed and some (over 100) are refused.
    @rule(sender=enrolled, receiver=enrolled, share=st.integers(1, 120), oneself=st.integers(0, 4))
    def transfer(self, sender: str, receiver: str, share: int, oneself: int) -> None:
        if sender == receiver and oneself:
            receiver = next(member for member in self.accounts if member != sender)
        self.catch_up()
        points = max(1, self.accounts[sender].balance * share // 100)
        body = {
            "from_member_id": sender,
            "to_member_id": receiver,
            "points": points,
            "reason": "machine transfer",
        }
        response = self.api.post("/v1/points/transfer", body)
        source, target = self.accounts[sender], self.accounts[receiver]
        if sender == receiver:
            event("transfer to oneself refused")
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "validation_error"
            return
        if points > source.balance:
            event("transfer refused")
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "insufficient_points"
            return
        event("transfer made")
        assert response.status_code == 201, response.text
        self.transferred(source, target, points, response.json()["data"])

    def transferred(self, source: Account, target: Account, points: int, data: Any) -> None:
        """The model's side of a transfer the server made (`data`: its answer)."""
        # The receiver gets one lot per expiry date drawn on, keeping the date.
        for expires_at, taken in source.spend(points).items():
            target.add_lot(taken, expires_at)
        source.transferred_out += points
        target.transferred_in += points
        source.row(self.key_id)
        target.row(self.key_id)
        assert (data["from"]["balance_after"], data["to"]["balance_after"]) == (
            source.balance,
            target.balance,
        )

    @rule(
        target=redemptions,
        member=enrolled,
        reward=st.sampled_from(sorted(REWARDS)),
        quantity=st.integers(1, 3),
    )
    def redeem(self, member: str, reward: str, quantity: int) -> Any:
        self.catch_up()
        cost, _, active = REWARDS[reward]
        account = self.accounts[member]
        stock = self.stock[reward]
        body = {"member_id": member, "reward_id": self.reward_ids[reward], "quantity": quantity}
        response = self.api.post("/v1/redemptions", body)
        refusals = set()
        if not active:
            refusals.add("reward_inactive")
        if stock is not None and stock < quantity:
            refusals.add("out_of_stock")
        if account.balance < cost * quantity:
            refusals.add("insufficient_points")
        event(f"redemption refused: {'+'.join(sorted(refusals))}" if refusals else "redeemed")
        if refusals:
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] in refusals
            return multiple()
        assert response.status_code == 201, response.text
        account.spend(cost * quantity)
        account.redeemed += cost * quantity
        account.row(self.key_id)
        self.moved["redeemed"] -= cost * quantity
        if stock is not None:
            self.stock[reward] = stock - quantity
        data = response.json()["data"]
        assert (data["status"], data["points"]) == ("completed", cost * quantity)
        self.redeemed[data["redemption_id"]] = Redemption(member, reward, quantity, cost * quantity)
        return data["redemption_id"]

    @rule(target=redemptions, member=enrolled, reward=st.sampled_from(sorted(REWARDS)))
    def earn_and_redeem(self, member: str, reward: str) -> Any:
        """An award of the reward's cost, then the reward: redeemed unless it is inactive, out of
        stock or a debt took the points (most random redemptions lack the points)."""
        self.award(member, REWARDS[reward][0])
        return self.redeem(member, reward, 1)

    @rule(redemption_id=redemptions)
    def cancel_redemption(self, redemption_id: str) -> None:
        self.catch_up()
        redemption = self.redeemed[redemption_id]
        response = self.api.post(f"/v1/redemptions/{redemption_id}/cancel")
        event("redemption cancelled again" if redemption.cancelled else "redemption cancelled")
        if redemption.cancelled:
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "not_cancellable"
            return
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "cancelled"
        redemption.cancelled = True
        account = self.accounts[redemption.member]
        account.add_lot(redemption.points, self.policy_expiry(self.now))
        account.redeemed -= redemption.points
        account.row(self.key_id)
        self.moved["refunded"] += redemption.points
        stock = self.stock[redemption.reward]
        if stock is not None:
            self.stock[redemption.reward] = stock + redemption.quantity

    @rule(transaction_id=pending_awards)
    def cancel_pending_award(self, transaction_id: str) -> None:
        self.catch_up()
        pending = self.pending[transaction_id]
        response = self.api.post(f"/v1/transactions/{transaction_id}/cancel")
        if pending.cancelled or pending.posted:
            event("award cancelled again" if pending.cancelled else "award already posted")
            assert response.status_code == 409, response.text
            assert response.json()["error"]["code"] == "not_cancellable"
            return
        event("pending award cancelled")
        assert response.status_code == 200, response.text
        assert response.json()["data"]["status"] == "cancelled"
        pending.cancelled = True
        self.accounts[pending.member].pending -= pending.points

    @rule(transaction_id=posted_awards)
    def cancel_posted_award(self, transaction_id: str) -> None:
        response = self.api.post(f"/v1/transactions/{transaction_id}/cancel")
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "not_cancellable"

    @rule(which=st.integers(0, 1))
    def write_with_key(self, which: int) -> None:
        """The writes from here on are made with key `which`."""
        self.api.key, self.key_id = self.keys[which].secret, self.keys[which].key_id

    @rule(by=hours)
    def advance_clock(self, by: int) -> None:
        self.clock.advance(hours=by)

    @precondition(lambda self: bool(self.due_times()))
    @rule()
    def advance_to_the_next_due_moment(self) -> None:
        """Land exactly on an available_at or expires_at, where off-by-one errors live."""
        self.clock.now = self.due_times()[0]

    @rule(days=st.none() | st.integers(1, 60))
    def set_policy(self, days: int | None) -> None:
        response = self.api.patch("/v1/program", {"points_expire_after_days": days})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["points_expire_after_days"] == days
        self.policy_days = days

    @rule()
    def sweep(self) -> None:
        run_async(self.store, Ledger(self.store, clock=self.clock).lifecycle.sweep)

    # invariants

    @invariant()
    def every_member_agrees_with_the_model_and_adds_up(self) -> None:
        LedgerMachine.steps += 1
        self.catch_up()
        for member, account in self.accounts.items():
            balance = self.api.balance(member)
            assert balance["balance"] >= 0 or account.debt, balance
            assert counters_add_up(balance), balance
            assert {k: balance[k] for k in balance if k != "member_id"} == account.figures(), member
            assert lot_remainders(self.store, member) == [
                lot.remaining for lot in account.open_lots()
            ], member
            rows = full_history(self.api, member)
            assert len(rows) == account.rows, member
            assert Counter(row["created_by"] for row in rows) == account.made_by, member
            assert_ledger_order(rows, balance["balance"])

    def assert_balance_as_of(self, member: str, moment: datetime, expected: dict[str, Any]) -> None:
        response = self.api.get(f"/v1/members/{member}/balance", as_of=stamp(moment))
        assert response.status_code == 200, response.text
        balance = response.json()["data"]
        assert {k: v for k, v in balance.items() if k != "member_id"} == expected, (member, moment)

    @invariant()
    def the_past_stays_as_recorded(self) -> None:
        """Keep each member's figures as they stand now, for balance_as_of. Once the clock has
        left a moment, every member's balance as of it, and as of the last instant before
        anything followed (the clock's next stop, or a posting or expiry falling due before
        it), is what the model recorded there."""
        self.catch_up()
        if self.past and self.now not in self.past:
            left = max(self.past)
            due = self.next_due[left]
            instant = min(self.now, due or self.now) - timedelta(microseconds=1)
            for member, figures in self.past[left].items():
                self.assert_balance_as_of(member, left, figures)
                self.assert_balance_as_of(member, instant, figures)
        self.past[self.now] = {member: a.figures() for member, a in self.accounts.items()}
        self.next_due[self.now] = next(iter(self.due_times()), None)

    @invariant()
    def members_agree_with_the_model(self) -> None:
        listed = self.api.get("/v1/members", per_page=100).json()["data"]
        assert listed == [account.profile(member) for member, account in self.accounts.items()]

    @invariant()
    def the_report_agrees_with_the_model(self) -> None:
        """Over every day since the start: what is outstanding and expiring now, the members,
        and each row type's points summed over the periods, in days, weeks or months."""
        self.catch_up()
        days = (self.now - START).days + 1
        interval = ("day", "week", "month")[LedgerMachine.steps % 3]
        if interval == "day" and days > 400:
            interval = "week"
        if interval == "week" and days > 400 * 7 - 7:
            interval = "month"
        response = self.api.get(
            "/v1/program/report",
            **{"from": START.date().isoformat(), "to": self.now.date().isoformat()},
            interval=interval,
        )
        assert response.status_code == 200, response.text
        report = response.json()["data"]
        accounts = self.accounts.values()
        lots = [lot for account in accounts for lot in account.open_lots()]
        # What the program owes: the points in lots. A debt is owed to the program, and does
        # not lower what the program owes the other members.
        assert report["outstanding"] == {
            "balance": sum(lot.remaining for lot in lots),
            "pending": sum(account.pending for account in accounts),
        }
        assert report["expiring"] == [
            {
                "before": stamp(self.now + timedelta(days=days)),
                "points": sum(
                    lot.remaining for lot in lots if lot.expires_at and lot.expires_at < before
                ),
            }
            for days in (30, 60, 90)
            for before in [self.now + timedelta(days=days)]
        ]
        never_posted = Counter(p.member for p in self.pending.values() if not p.posted)
        active = [m for m, a in self.accounts.items() if a.rows > never_posted[m]]
        assert report["members"] == {"total": len(accounts), "active_in_period": len(active)}
        summed = {move: sum(period[move] for period in report["periods"]) for move in MOVES}
        assert summed == {move: self.moved[move] for move in MOVES} | {
            "expired": -sum(account.expired for account in accounts),
            "transferred": sum(account.transferred_in for account in accounts),
        }

    @invariant()
    def stock_agrees_with_the_model(self) -> None:
        listed = self.api.get("/v1/rewards").json()["data"]
        assert {r["name"]: r["stock"] for r in listed} == self.stock

    @invariant()
    def verify_finds_nothing(self) -> None:
        assert verify(self.store) == []


# Databases, one per example


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "tally.db"
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    store.close()
    return path


def sqlite_copies(template: Path) -> DatabaseFactory:
    @contextlib.contextmanager
    def copy() -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="tally-machine-") as folder:
            path = Path(folder) / "tally.db"
            with (
                contextlib.closing(sqlite3.connect(template)) as source,
                contextlib.closing(sqlite3.connect(path)) as target,
            ):
                source.backup(target)
            yield f"sqlite:///{path}"

    return copy


def postgres_copies(template: str) -> DatabaseFactory:
    assert POSTGRES_URL is not None

    def copy() -> contextlib.AbstractContextManager[str]:
        assert POSTGRES_URL is not None
        return postgres_copy(POSTGRES_URL, template, prefix="tally_machine")

    return copy


def run_machine(make_database: DatabaseFactory, *, examples: int, steps: int) -> tuple[int, int]:
    """Run the machine; return how many examples and checked steps it ran."""
    LedgerMachine.examples = LedgerMachine.steps = 0
    run_state_machine_as_test(
        lambda: LedgerMachine(make_database),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    return LedgerMachine.examples, LedgerMachine.steps


def test_random_ledger_histories_keep_every_invariant_on_sqlite(
    sqlite_template: Path, record_property: Callable[[str, object], None]
) -> None:
    examples, steps = run_machine(sqlite_copies(sqlite_template), examples=60, steps=30)
    record_property("hypothesis_examples", examples)
    print(f"\nSQLite state machine: {examples} examples, {steps} checked states")
    assert examples > 0


@pytest.mark.skipif(POSTGRES_URL is None, reason="TALLY_TEST_POSTGRES_URL is not set")
def test_random_ledger_histories_keep_every_invariant_on_postgres(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> None:
    template = request.getfixturevalue("postgres_template")
    examples, steps = run_machine(postgres_copies(template), examples=10, steps=20)
    record_property("hypothesis_examples", examples)
    print(f"\nPostgreSQL state machine: {examples} examples, {steps} checked states")
    assert examples > 0


@pytest.mark.soak
def test_long_random_ledger_histories_keep_every_invariant(
    request: pytest.FixtureRequest,
    sqlite_template: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """`pytest -m soak` (TALLY_SOAK=1): longer histories, on PostgreSQL too when it is set."""
    examples, steps = run_machine(sqlite_copies(sqlite_template), examples=300, steps=60)
    record_property("hypothesis_examples", examples)
    print(f"\nSQLite state machine (soak): {examples} examples, {steps} checked states")
    if POSTGRES_URL is not None:
        template = request.getfixturevalue("postgres_template")
        examples, steps = run_machine(postgres_copies(template), examples=60, steps=40)
        print(f"PostgreSQL state machine (soak): {examples} examples, {steps} checked states")
