"""Helpers for the lifecycle, rewards and property tests: times, sweeps, lots, ledger checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tally.commands import Clock, SweepReport
from tally.maintenance import run_async
from tally.ports import Store
from tally.service import Ledger
from tests.support import Api, FakeClock


def at(text: str) -> datetime:
    """`2026-01-31` (midnight) or `2026-01-31T10:00`, in UTC unless the text says otherwise."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stamp(moment: datetime | str) -> str:
    """A time as the API writes it: RFC 3339 in UTC ending in Z."""
    if isinstance(moment, str):
        moment = at(moment)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def move_to(clock: FakeClock, when: str | datetime) -> None:
    """Move the clock forward to `when` (never backward: the ledger's time only grows)."""
    target = at(when) if isinstance(when, str) else when
    assert target >= clock.now, f"the clock would go back from {clock.now} to {target}"
    clock.now = target


def sweep(store: Store, clock: Clock) -> SweepReport:
    """What `tally sweep` does, at the clock's time, on this thread's own event loop."""
    return run_async(store, Ledger(store, clock=clock).lifecycle.sweep)


def program_id(store: Store, name: str = "acme") -> int:
    return store.transact(lambda tx: tx.programs.ensure(name, now=datetime.now(UTC))).id


def lot_remainders(store: Store, member_id: str, *, program: str = "acme") -> list[int]:
    """What is left in each of the member's lots that still hold points, in spend order.

    Read straight from the store: nothing falls due on the way, unlike every API read.
    """
    pid = program_id(store, program)

    def work(tx: Any) -> list[int]:
        member = tx.members.get(pid, member_id)
        assert member is not None, member_id
        return [lot.remaining for lot in tx.lots.open(member.pk)]

    return store.transact(work)


def stored_balance(store: Store, member_id: str, *, program: str = "acme") -> int:
    """The balance as stored, without anything falling due first."""
    pid = program_id(store, program)
    member = store.transact(lambda tx: tx.members.get(pid, member_id))
    assert member is not None, member_id
    return int(member.account.balance)


def transaction(api: Api, transaction_id: str) -> dict[str, Any]:
    """GET /v1/transactions/{id}, which must succeed."""
    response = api.get(f"/v1/transactions/{transaction_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def error_code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def full_history(api: Api, member_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every row of a member's history, newest first, across all pages."""
    rows: list[dict[str, Any]] = []
    page = 1
    while True:
        response = api.get(
            f"/v1/members/{member_id}/transactions", page=page, per_page=100, **params
        )
        assert response.status_code == 200, response.text
        body = response.json()
        rows += body["data"]
        if page >= body["meta"]["total_pages"]:
            return rows
        page += 1


def effective_at(row: dict[str, Any]) -> datetime:
    """When a row took effect on the balance: a posted pending award at its posted_at."""
    return at(row.get("posted_at") or row["created_at"])


def assert_ledger_order(rows: list[dict[str, Any]], balance: int) -> None:
    """A member's whole history, newest first, is in ledger order and its chain adds up.

    Each posted row's balance_after is the next older posted row's plus its own points (the
    oldest starts from zero, the newest is the balance); pending and cancelled rows have no
    balance_after; rows are listed by when they took effect.
    """
    effective = [row for row in rows if row["status"] == "posted"]
    for row in rows:
        if row["status"] != "posted":
            assert row["balance_after"] is None, row
    for newer, older in zip(effective, effective[1:], strict=False):
        assert newer["balance_after"] == older["balance_after"] + newer["points"], (newer, older)
    if effective:
        assert effective[-1]["balance_after"] == effective[-1]["points"], effective[-1]
        assert effective[0]["balance_after"] == balance, (effective[0], balance)
    else:
        assert balance == 0
    times = [effective_at(row) for row in rows]
    assert times == sorted(times, reverse=True), [
        (row["type"], row["status"], row["points"], str(t))
        for row, t in zip(rows, times, strict=True)
    ]


def counters_add_up(balance: dict[str, Any]) -> bool:
    return bool(
        balance["balance"]
        == balance["lifetime_earned"]
        + balance["lifetime_transferred_in"]
        - balance["lifetime_redeemed"]
        - balance["lifetime_deducted"]
        - balance["lifetime_expired"]
        - balance["lifetime_transferred_out"]
    )
