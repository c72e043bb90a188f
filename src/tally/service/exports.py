"""Exporting a program's transactions: page after page, so memory stays flat however many.

Each page is one statement of its own, from the last id of the page before (keyset paging in
id order, which is creation order): no long transaction holds the database (a long one would
hold back PostgreSQL's vacuum and the events feed), and every row is listed exactly once even
while the ledger grows. The export is not one snapshot: a row written while it runs is listed
if its id sorts after the page being read, and each row shows its state when its page was read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from tally.domain import Entry, HistoryQuery
from tally.ports import Tx
from tally.service.runner import Runner

EXPORT_PAGE = 1_000


class Exports:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def transactions(
        self, program_id: int, query: HistoryQuery, *, page_size: int = EXPORT_PAGE
    ) -> AsyncIterator[list[Entry]]:
        """The program's transactions matching `query`, a page at a time, in id order."""
        after: str | None = None
        while True:

            def read(tx: Tx, after: str | None = after) -> list[Entry]:
                return tx.entries.export_page(program_id, query, after=after, limit=page_size)

            page = await self._runner.store.lookup(read)
            if page:
                yield page
            if len(page) < page_size:
                return
            after = page[-1].id
