"""Use cases of the ledger's past: a member's balance as it stood at a moment, and (next) the
program report.

A balance in the past is the ledger replayed: the counters kept at the latest checkpoint at or
before the moment, then each entry that had taken effect after it, through `Account.post`, the
same rule that made the counters when the entries were written. A new type of entry needs
nothing here once `Account.post` knows it.
"""

from __future__ import annotations

from datetime import datetime

from tally.commands import BalanceView
from tally.domain import Account, EntryType
from tally.errors import invalid
from tally.ports import Tx
from tally.service import accounts
from tally.service.runner import Runner


class Reports:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

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
