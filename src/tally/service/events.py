"""Use case of the outbox: the event feed a consumer polls (api.md, section 8).

The events themselves are written by `outbox`, in the transactions of the changes they report;
the order the feed lists them in, and why polling with `after` never misses or repeats one, is
the store's (`ports.EventRows`).
"""

from __future__ import annotations

from tally.commands import FeedPage, FeedQuery
from tally.errors import invalid
from tally.ports import Tx
from tally.service.runner import Runner


class Events:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def feed(self, program_id: int, query: FeedQuery) -> FeedPage:
        position = None
        if query.after is not None:
            # A position never changes: it is looked up on its own, and the feed is then read
            # in a statement with a snapshot of its own (on PostgreSQL, taken after the
            # horizon's look at other databases: `tally.storage.sql.session.Session.feed_horizon`).
            after = query.after
            position = await self._runner.store.lookup(
                lambda tx: tx.events.position(program_id, after)
            )
            if position is None:
                raise invalid(
                    "after",
                    f"after: {query.after} is not an event of this program that is still "
                    "kept; start again without after, or from a later event.",
                )

        def read(tx: Tx) -> FeedPage:
            found = tx.events.after(program_id, position, limit=query.limit + 1, types=query.types)
            events = [event for _, event in found[: query.limit]]
            next_after = events[-1].id if events else query.after
            return FeedPage(events, len(found) > query.limit, next_after)

        return await self._runner.store.lookup(read)
