"""Transactions exported as CSV: a header, then one row per transaction, in id order.

Times are RFC 3339 in UTC as the API writes them; `metadata` is its JSON text; a cell of text
that a spreadsheet would run as a formula is written behind a `'` (`cells.safe`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime

from tally.csvfiles.cells import safe
from tally.domain import Entry

COLUMNS = (
    "transaction_id",
    "member_id",
    "type",
    "status",
    "points",
    "reason",
    "reference",
    "metadata",
    "balance_after",
    "created_at",
    "posted_at",
    "available_at",
    "expires_at",
)


def header() -> str:
    return ",".join(COLUMNS) + "\n"


def rows_text(entries: Iterable[Entry]) -> str:
    """The CSV lines of `entries` (no header)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(_cells(e) for e in entries)
    return buffer.getvalue()


def _cells(e: Entry) -> tuple[object, ...]:
    return (
        e.id,
        safe(e.member_id),
        e.type.value,
        e.status.value,
        e.points,
        safe(e.reason),
        "" if e.reference is None else safe(e.reference),
        "" if e.metadata is None else e.metadata,
        "" if e.balance_after is None else e.balance_after,
        _time(e.created_at),
        _time(e.posted_at),
        _time(e.available_at),
        _time(e.expires_at),
    )


def _time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.isoformat().replace("+00:00", "Z")
