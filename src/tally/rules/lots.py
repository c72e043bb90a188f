"""Lot arithmetic: which lots a spend draws on, what falls due by a moment, when a lot expires.

Spends draw from lots soonest-expiring first, never-expiring last, oldest first among equals;
what is left of a lot when it expires leaves as one `expire` entry. Pure functions of values.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tally.domain import Draw, Lot


def plan_draws(lots: list[Lot], points: int) -> list[Draw]:
    """The draws that take `points` from `lots` in spend order; the lots must hold enough."""
    draws: list[Draw] = []
    left = points
    for lot in sorted(lots, key=lambda lot: lot.spend_order):
        if left == 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            draws.append(Draw(lot.entry_id, take))
            left -= take
    if left:
        raise ValueError(f"lots hold {points - left} points, spend needs {points}")
    return draws


@dataclass(frozen=True, slots=True)
class PendingAward:
    entry_id: str
    points: int
    available_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Maturity:
    """A pending award posts at `at`."""

    award: PendingAward
    at: datetime


@dataclass(frozen=True, slots=True)
class Expiry:
    """What is left of a lot leaves the balance at `at`."""

    lot: Lot
    at: datetime


def due_events(
    pending: list[PendingAward], lots: list[Lot], *, now: datetime
) -> list[Maturity | Expiry]:
    """Everything due by `now`, in the order it happened.

    A pending award that matures becomes a lot, which may itself be due to expire by `now`; at
    the same instant maturities come first. Lots with nothing left never expire.
    """
    events: list[tuple[datetime, int, int, Maturity | Expiry]] = []
    for award in pending:
        if award.available_at <= now:
            events.append((award.available_at, 0, 0, Maturity(award, award.available_at)))
            if award.expires_at is not None and award.expires_at <= now:
                lot = Lot(award.entry_id, award.points, award.expires_at, seq=-1)
                events.append((award.expires_at, 1, 0, Expiry(lot, award.expires_at)))
    for lot in lots:
        if lot.remaining > 0 and lot.expires_at is not None and lot.expires_at <= now:
            events.append((lot.expires_at, 1, lot.seq, Expiry(lot, lot.expires_at)))
    events.sort(key=lambda e: e[:3])
    return [event for *_, event in events]


def default_expiry(*, effective_at: datetime, expire_after_days: int | None) -> datetime | None:
    """When a new lot expires under the program's policy (None: never)."""
    if expire_after_days is None:
        return None
    return effective_at + timedelta(days=expire_after_days)
