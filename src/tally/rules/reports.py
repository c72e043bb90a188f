"""What the program report adds up, and the periods it splits a range into (api.md section 9).

Pure functions of dates: the periods are UTC days, ISO weeks (from Monday) or calendar months.
"""

from __future__ import annotations

import enum
from datetime import date, timedelta

# The period figure each type of ledger row adds its points to (signed as in history: spends
# and expiries negative). A new type of row is one line here. `transfer_out` is left out: in
# one program it mirrors `transfer_in`, so `transferred` is the points that moved.
FIGURE_OF_TYPE = {
    "award": "awarded",
    "deduct": "deducted",
    "redeem": "redeemed",
    "refund": "refunded",
    "expire": "expired",
    "transfer_in": "transferred",
    "reversal": "reversed",
}
FIGURES = tuple(dict.fromkeys(FIGURE_OF_TYPE.values()))

MAX_PERIODS = 400
DEFAULT_DAYS = 30
EXPIRING_WITHIN_DAYS = (30, 60, 90)


class Interval(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def period_start(day: date, interval: Interval) -> date:
    """The first day of the period of `interval` that holds `day`."""
    if interval is Interval.WEEK:
        return day - timedelta(days=day.weekday())
    if interval is Interval.MONTH:
        return day.replace(day=1)
    return day


def next_period(start: date, interval: Interval) -> date:
    if interval is Interval.WEEK:
        return start + timedelta(days=7)
    if interval is Interval.MONTH:
        return date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start + timedelta(days=1)


def periods(first: date, last: date, interval: Interval) -> list[date]:
    """The starts of the periods covering `first` to `last` (both inclusive): the first one
    starts at `first`, each later one on a boundary of `interval`."""
    starts = [first]
    boundary = next_period(period_start(first, interval), interval)
    while boundary <= last:
        starts.append(boundary)
        boundary = next_period(boundary, interval)
    return starts


def period_count(first: date, last: date, interval: Interval) -> int:
    """How many periods `periods` would return, without making them."""
    if interval is Interval.DAY:
        return (last - first).days + 1
    if interval is Interval.WEEK:
        return (period_start(last, interval) - period_start(first, interval)).days // 7 + 1
    return (last.year - first.year) * 12 + last.month - first.month + 1
