"""Awards files: `member_id,points,reason[,reference][,expires_at][,metadata]`, a header first.

Each row is judged as the API judges a JSON award (`tally.http.awards`), after the CSV-only
rules: a header naming known columns, each once; a row with as many cells as the header; points
written as digits. Each row's Idempotency-Key is derived from the file's bytes and the row's
line (`service.imports.row_key`), so running the same file again replays it. The columns a
transactions export adds (`transaction_id`, `type`, `status`, ...) are recognised, so an export
of awards imports as it is: a row that is not a posted award is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable

import msgspec

from tally.commands import ImportCommand, ImportOutcome, KeyedAward, RowError, RowResult
from tally.csvfiles.cells import safe, unquoted
from tally.domain import MAX_POINTS
from tally.errors import Detail, TallyError, ValidationFailed
from tally.http.awards import award_of_fields
from tally.service.imports import row_key

REQUIRED = ("member_id", "points", "reason")
OPTIONAL = ("reference", "expires_at", "metadata")
# Columns of a transactions export that an awards file may carry and that are not imported:
# `type` and `status` are checked (only posted awards import), the others are ignored.
FROM_AN_EXPORT = (
    "transaction_id",
    "type",
    "status",
    "balance_after",
    "created_at",
    "posted_at",
    "available_at",
)
TEXT = ("member_id", "reason", "reference")
DIGEST_CHARS = 24  # of the file's SHA-256, in each row's key: 96 bits
RESULT_COLUMNS = ("line", "member_id", "status", "transaction_id", "error_code", "error_message")

_DIGITS = re.compile(r"[0-9]{1,19}")


def read(data: bytes) -> ImportCommand:
    """Every row of an awards file, read and keyed; raises `ValidationFailed` (naming the line)
    when the file as a whole cannot be read: not UTF-8, no header, an unknown column, broken
    quoting."""
    digest = hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's byte-order mark is not the header's
    except UnicodeDecodeError as error:
        raise _file_error(f"The file is not UTF-8 text (byte {error.start + 1} is not).") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[KeyedAward | RowError] = []
    header: list[str] | None = None
    try:
        while True:
            line = reader.line_num + 1
            cells = next(reader, None)
            if cells is None:
                break
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            if header is None:
                header = _header(cells, line)
                continue
            rows.append(_row(header, cells, line, key=row_key(digest, line)))
    except csv.Error as error:
        raise _file_error(f"Line {reader.line_num}: the CSV cannot be read ({error}).") from None
    if header is None:
        raise _file_error(f"The file is empty; its first line must be the header: {_COLUMNS}.")
    if not rows:
        raise _file_error("The file has a header but no rows.")
    return ImportCommand(rows)


_COLUMNS = "member_id,points,reason[,reference][,expires_at][,metadata]"


def _file_error(message: str) -> ValidationFailed:
    return ValidationFailed(message, details=[Detail(message, "file")])


def _header(cells: list[str], line: int) -> list[str]:
    names = [cell.strip().lower() for cell in cells]
    known = (*REQUIRED, *OPTIONAL, *FROM_AN_EXPORT)
    for name in names:
        if name not in known:
            raise _file_error(
                f"Line {line}: the header names an unknown column {name!r}; the columns are "
                f"{_COLUMNS} (and those of a transactions export)."
            )
        if names.count(name) > 1:
            raise _file_error(f"Line {line}: the header names the column {name!r} twice.")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise _file_error(
            f"Line {line}: the header lacks the column(s) {', '.join(missing)}; the first line "
            f"must be the header: {_COLUMNS}."
        )
    return names


def _row(header: list[str], cells: list[str], line: int, *, key: str) -> KeyedAward | RowError:
    named = dict(zip(header, cells, strict=False))
    member_id = unquoted(named.get("member_id", "")).strip() or None
    try:
        if len(cells) != len(header):
            raise ValidationFailed(
                f"The row has {len(cells)} cells; the header names {len(header)} columns."
            )
        return KeyedAward(line, key, award_of_fields(_fields(named)))
    except TallyError as error:
        return RowError(line, member_id, error)


def _fields(named: dict[str, str]) -> dict[str, object]:
    """The award's fields from the row's cells; blank optional cells are left out."""
    kind, status = named.get("type"), named.get("status")
    if kind is not None and kind.strip() != "award":
        raise _invalid("type", f"only awards can be imported; this row is a {kind.strip()!r}.")
    if status is not None and status.strip() != "posted":
        raise _invalid(
            "status", f"only posted awards can be imported; this row is {status.strip()!r}."
        )
    fields: dict[str, object] = {}
    for name in (*REQUIRED, *OPTIONAL):
        cell = named.get(name, "")
        value = unquoted(cell) if name in TEXT else cell.strip()
        if not value.strip():
            if name in REQUIRED:
                raise _invalid(name, "missing: the cell is empty.")
            continue
        if name == "points":
            if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_POINTS:
                raise _invalid(
                    "points",
                    f"must be a whole number from 1 to {MAX_POINTS:,} written with digits "
                    f"(not {cell!r}).",
                )
            fields[name] = int(value)
        elif name == "metadata":
            try:
                fields[name] = msgspec.json.decode(value)
            except msgspec.DecodeError:
                raise _invalid("metadata", "must be a JSON object.") from None
        else:
            fields[name] = value
    return fields


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[Detail(message, field)])


# The results.


def result_rows(outcome: ImportOutcome) -> Iterable[list[str]]:
    """The results file: a header, then one row per row of the awards file, in line order."""
    yield list(RESULT_COLUMNS)
    for r in outcome.results:
        yield [
            str(r.line),
            safe(r.member_id or ""),
            r.status.value,
            r.transaction_id or "",
            "" if r.error is None else r.error.code,
            "" if r.error is None else safe(describe(r.error)),
        ]


def describe(error: TallyError) -> str:
    """One sentence naming the field, as a results file and a terminal show it."""
    fields = [d.field for d in error.details if d.field and d.field != "file"]
    if fields and not error.message.startswith(f"{fields[0]}:"):
        return f"{fields[0]}: {error.message}"
    return error.message


def result_text(outcome: ImportOutcome) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(result_rows(outcome))
    return buffer.getvalue()


def result_of(r: RowResult) -> dict[str, object]:
    """A row's result as the API answers it."""
    error = None if r.error is None else {"code": r.error.code, "message": describe(r.error)}
    return {
        "line": r.line,
        "member_id": r.member_id,
        "status": r.status.value,
        "transaction_id": r.transaction_id,
        "error": error,
    }
