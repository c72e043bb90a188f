"""Use cases of the ledger's past: a member's balance as it stood at a moment, and the program
report.

A balance in the past is the ledger replayed: the counters kept at the latest checkpoint at or
before the moment, then each entry that had taken effect after it, through `Account.post`, the
same rule that made the counters when the entries were written. A new type of entry needs
nothing here once `Account.post` knows it.

The report adds up days: the days that nothing can change any more are kept as running totals
(`report_days`, filled here when a report asks for them), the rest are read from the entries. A
day can still change while something due in it has not been applied (an expiry is dated when it
fell due, however late the server applies it) or while a transaction that began in it may still
commit: so a day is rolled up once it ended `SETTLE` ago and everything due by its end has been
applied.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from tally.commands import BalanceView, ProgramReport, ReportPeriod
from tally.domain import Account, EntryType
from tally.errors import invalid
from tally.ports import Tx
from tally.rules.reports import (
    DEFAULT_DAYS,
    EXPIRING_WITHIN_DAYS,
    FIGURE_OF_TYPE,
    FIGURES,
    MAX_PERIODS,
    Interval,
    period_count,
    periods,
)
from tally.service import accounts
from tally.service.lifecycle import Lifecycle
from tally.service.runner import Runner

# How long after a day ends its running totals are kept: longer than any transaction runs (a
# transaction's entries take effect at the moment it began) and than clocks of several servers
# differ.
SETTLE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """`first` and `last` are UTC days, both included; None takes the default."""

    first: date | None
    last: date | None
    interval: Interval


class Reports:
    def __init__(self, runner: Runner, *, lifecycle: Lifecycle) -> None:
        self._runner = runner
        self._lifecycle = lifecycle

    async def program_report(self, program_id: int, query: ReportQuery) -> ProgramReport:
        """The program's liability now (outstanding, expiring, members) and what moved in each
        period of the range, from the ledger."""
        runner = self._runner
        now = runner.clock()
        last = query.last or now.date()
        first = query.first or last - timedelta(days=DEFAULT_DAYS - 1)
        _check_range(first, last, query.interval)
        due = await runner.store.read(lambda tx: tx.reports.due_since())
        if due is not None and due <= now:
            await self._lifecycle.apply_due()
        if await runner.store.read(lambda tx: _roll_up(tx, program_id, runner.clock(), dry=True)):
            await runner.write(lambda tx: _roll_up(tx, program_id, runner.clock(), dry=False))

        def read(tx: Tx) -> ProgramReport:
            return _report(tx, program_id, first, last, query.interval, runner.clock())

        return await runner.store.read(read)

    async def balance_as_of(self, program_id: int, member_id: str, as_of: datetime) -> BalanceView:
        """Every figure of the member's balance as it stood at `as_of` (zeros before the member
        existed); `as_of` may not be later than now."""

        def read(tx: Tx, now: datetime, writable: bool) -> BalanceView:
            if as_of > now:
                raise invalid(
                    "as_of",
                    f"as_of is in the future; the latest moment there is a balance for is now "
                    f"({now.isoformat().replace('+00:00', 'Z')}).",
                )
            # Up to date first: what fell due by now (and so by `as_of`) is in the ledger.
            member = accounts.current_member(tx, program_id, member_id, now, writable)
            if as_of < member.created_at:
                return BalanceView(member.member_id, Account(), None)
            past = tx.reports.past(member.pk, at=as_of)
            account = past.checkpoint
            for kind, points in past.entries:
                account = account.post(EntryType(kind), points)
            upcoming = tx.reports.past_expiration(member.pk, at=as_of, last_seq=past.last_seq)
            return BalanceView(member.member_id, account.hold(past.pending), upcoming)

        return await self._runner.view(read)


def _check_range(first: date, last: date, interval: Interval) -> None:
    if first > last:
        raise invalid("from", f"from ({first}) must not be later than to ({last}).")
    count = period_count(first, last, interval)
    if count > MAX_PERIODS:
        raise invalid(
            "from",
            f"from {first} to {last} is {count} periods of a {interval.value}; a report has at "
            f"most {MAX_PERIODS}: shorten the range or take a longer interval.",
        )


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _roll_up(tx: Tx, program_id: int, now: datetime, *, dry: bool) -> bool:
    """Add to the running totals the days that ended `SETTLE` ago with nothing due left in
    them; whether there were any (`dry`: only whether there are)."""
    horizon = now - SETTLE
    due = tx.reports.due_since()
    if due is not None:
        horizon = min(horizon, due)
    until = _midnight(horizon.date())
    rolled = tx.reports.rolled_up_until(program_id)
    if rolled is not None and rolled >= until:
        return False
    if not dry:
        tx.reports.roll_up(program_id, start=rolled, end=until)
    return True


def _report(
    tx: Tx, program_id: int, first: date, last: date, interval: Interval, now: datetime
) -> ProgramReport:
    start, end = _midnight(first), _midnight(last + timedelta(days=1))
    starts = periods(first, last, interval)
    figures = [dict.fromkeys(FIGURES, 0) for _ in starts]
    rolled = tx.reports.rolled_up_until(program_id)
    for day, kind, points in tx.reports.day_totals(
        program_id, start=start, end=end, rolled_until=rolled
    ):
        figure = FIGURE_OF_TYPE.get(kind)
        if figure is not None:
            figures[bisect.bisect_right(starts, day.date()) - 1][figure] += points
    balance, pending, members = tx.reports.outstanding(program_id)
    befores = [now + timedelta(days=days) for days in EXPIRING_WITHIN_DAYS]
    expiring = tx.reports.expiring(program_id, before=befores)
    return ProgramReport(
        first=first,
        last=last,
        interval=interval.value,
        balance=balance,
        pending=pending,
        expiring=list(zip(befores, expiring, strict=True)),
        members=members,
        active_members=tx.reports.active_members(program_id, start=start, end=end),
        periods=[ReportPeriod(period, sums) for period, sums in zip(starts, figures, strict=True)],
    )
