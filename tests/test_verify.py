"""`tally verify` (`tally.maintenance.verify`) among many members: a corruption of one member's
rows is reported for that member alone, with its own figures.

Verify reads each figure for every member at once and pairs the results up by member, so these
ledgers put members with nothing, with no open lot and with a debt between the corrupted one and
its neighbours: a figure handed to the wrong member would show as a mismatch of a clean one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tally.domain import Scope
from tally.maintenance import Mismatch, create_key, verify
from tally.ports import Store
from tests.support import Api, FakeClock, serve_app
from tests.test_cli import execute_sql


@dataclass(frozen=True)
class Ledger:
    """What a mismatch names: members (by program id and member id), and m2's award (its lot)
    and deduct."""

    program_id: int
    award: str
    deduct: str

    def member(self, member_id: str) -> str:
        return f"{self.program_id}/{member_id}"


@pytest.fixture
def ledger(store: Store, clock: FakeClock) -> Iterator[Ledger]:
    """Program `acme`'s members, each with figures of its own:

    m0: award 100, deduct 30 (balance 70); m1: nothing; m2: award 200, a pending award of 50,
    deduct 20 (balance 180); m3: award 100, deduct 100 (no open lot); m4: award 100, deduct 80,
    the award reversed (a debt of 80); m5: award 40; long: 25 awards of 1.
    """
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    program = store.transact(lambda tx: tx.programs.find("acme"))
    assert program is not None
    with serve_app(store, clock=clock) as client:
        api = Api(client, key, store=store, clock=clock)
        for member_id in ("m0", "m1", "m2", "m3", "m4", "m5", "long"):
            api.member(member_id)
        api.award("m0", 100)
        spend(api, "m0", 30)
        award = api.award("m2", 200)["transaction_id"]
        api.award("m2", 50, available_at="2030-01-01T00:00:00Z")
        deduct = spend(api, "m2", 20)
        api.award("m3", 100)
        spend(api, "m3", 100)
        reversed_award = api.award("m4", 100)["transaction_id"]
        spend(api, "m4", 80)
        path = f"/v1/transactions/{reversed_award}/reverse"
        reversal = api.post(path, {"reason": "returned", "allow_negative": True})
        assert reversal.status_code == 201, reversal.text
        api.award("m5", 40)
        for _ in range(25):
            api.award("long", 1)
    assert verify(store) == []
    yield Ledger(program.id, award, deduct)


def spend(api: Api, member_id: str, points: int) -> str:
    response = api.deduct(member_id, points)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["transaction_id"])


def of(member_id: str) -> str:
    return f"(SELECT pk FROM members WHERE member_id = '{member_id}')"


# A corruption of one member's rows, and every mismatch verify must report for it.
CORRUPTIONS: dict[str, tuple[str, Callable[[Ledger], list[Mismatch]]]] = {
    "a counter": (
        "UPDATE members SET lifetime_earned = lifetime_earned + 5 WHERE member_id = 'm2'",
        lambda ids: [Mismatch(ids.member("m2"), "lifetime_earned is 205, the ledger gives 200")],
    ),
    "the balance": (
        "UPDATE members SET balance = balance + 1 WHERE member_id = 'm2'",
        lambda ids: [
            Mismatch(ids.member("m2"), "balance is 181, the ledger gives 180"),
            Mismatch(ids.member("m2"), "open lots hold 180, balance is 181"),
        ],
    ),
    "pending": (
        "UPDATE members SET pending = pending + 1 WHERE member_id = 'm2'",
        lambda ids: [Mismatch(ids.member("m2"), "pending is 51, the ledger gives 50")],
    ),
    "entry_count": (
        "UPDATE members SET entry_count = entry_count - 1 WHERE member_id = 'm2'",
        lambda ids: [Mismatch(ids.member("m2"), "entry_count is 2, the ledger gives 3")],
    ),
    "an open lot": (
        f"UPDATE lots SET remaining = remaining - 1 WHERE member_pk = {of('m2')}",
        lambda ids: [
            Mismatch(ids.member("m2"), "open lots hold 179, balance is 180"),
            Mismatch(ids.award, "accounts for 200 points, its draws (or lots) for 199"),
        ],
    ),
    "held and owed": (
        "UPDATE members SET balance = balance + 3, debt = 3 WHERE member_id = 'm2'",
        lambda ids: [Mismatch(ids.member("m2"), "holds 183 points and owes 3 at once")],
    ),
    "a balance_after": (
        f"UPDATE entries SET balance_after = balance_after + 1 WHERE member_pk = {of('m2')} "
        "AND type = 'deduct'",
        lambda ids: [
            Mismatch(ids.member("m2"), f"{ids.deduct} has balance_after 181, the chain gives 180")
        ],
    ),
    "a debt": (
        "UPDATE members SET debt = debt + 1 WHERE member_id = 'm4'",
        lambda ids: [
            Mismatch(ids.member("m4"), "balance is -81, the ledger gives -80"),
            Mismatch(ids.member("m4"), "reversals are owed 80, balance is -81"),
        ],
    ),
    "a counter a reversal changed": (
        "UPDATE members SET lifetime_earned = lifetime_earned + 1 WHERE member_id = 'm4'",
        lambda ids: [Mismatch(ids.member("m4"), "lifetime_earned is 1, the ledger gives 0")],
    ),
}


@pytest.mark.parametrize(("statement", "expected"), CORRUPTIONS.values(), ids=list(CORRUPTIONS))
def test_a_corruption_of_one_member_among_many_is_reported_for_that_member_alone(
    store: Store,
    database_url: str,
    ledger: Ledger,
    statement: str,
    expected: Callable[[Ledger], list[Mismatch]],
) -> None:
    execute_sql(database_url, statement)
    assert verify(store) == expected(ledger)


def test_each_member_reports_its_own_first_twenty_chain_breaks(
    store: Store, database_url: str, ledger: Ledger
) -> None:
    execute_sql(
        database_url,
        "UPDATE entries SET balance_after = balance_after + 1 "
        f"WHERE member_pk IN ({of('long')}, {of('m2')}) AND status = 'posted'",
    )
    found = verify(store)
    assert [m.member for m in found] == [ledger.member("m2")] * 2 + [ledger.member("long")] * 20
    assert all("the chain gives" in m.problem for m in found)
    assert found[-1].problem.endswith("has balance_after 21, the chain gives 20")
