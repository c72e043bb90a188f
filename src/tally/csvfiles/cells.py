"""Cells safe to open in a spreadsheet: text that a spreadsheet would run as a formula is
written behind a single quote (OWASP's "CSV injection"), and read back without it."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe(text: str) -> str:
    """`text` as a cell no spreadsheet runs: behind a `'` if it starts like a formula."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def unquoted(cell: str) -> str:
    """A cell as written by `safe`, read back: the `'` before a formula-like start dropped."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell
