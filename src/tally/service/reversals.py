"""Use case of reversals: take back (part of) an award, or give back (part of) a deduct.

The original's member is locked and brought up to date, and the original read again under that
lock, so two reversals of one row (or a reversal and a spend of its points) take turns and never
reverse more than it moved. The rules are `tally.rules.reversals`'.
"""

from __future__ import annotations

from datetime import datetime

from tally.commands import Idempotency, Reply, ReverseCommand
from tally.domain import EntryType, Lot
from tally.ports import Tx
from tally.rules import reversals as rules
from tally.rules.points import Spend
from tally.service import accounts, outbox
from tally.service.points import entry_or_raise
from tally.service.runner import Render, Runner


class Reversals:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def reverse(
        self,
        program_id: int,
        transaction_id: str,
        cmd: ReverseCommand,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[rules.Reversal],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> rules.Reversal:
            found = entry_or_raise(tx, program_id, transaction_id)
            locked = accounts.locked_member(tx, program_id, found.member_id, now)
            # Read again under the member's lock: another reversal may have come first, and a
            # pending award may just have posted.
            original = tx.entries.get(program_id, transaction_id) or found
            member = locked.member
            own: Lot | None = None
            others: list[Lot] = []
            if original.type is EntryType.AWARD:
                points = rules.points_to_reverse(original, cmd)  # refuse before reading lots
                own = tx.lots.get(original.id)
                unspent = own.remaining if own is not None else 0
                if points > unspent and cmd.allow_negative:
                    others = tx.lots.covering(member.pk, points)
            planned = rules.plan_reversal(
                member,
                original,
                cmd,
                own=own,
                others=others,
                expire_after_days=locked.expire_after_days,
                now=now,
                created_by=created_by,
            )
            tx.entries.set_points_reversed(original.id, planned.original.points_reversed)
            if planned.lot is None:
                accounts.write_spend(tx, _as_spend(planned), now)
            else:
                tx.entries.insert(planned.entry)
                outbox.transactions_created(tx, [planned.entry], now)
                before = member.account.balance
                accounts.write_lots(tx, member.pk, [planned.lot], balance_before=before)
                accounts.checkpointed(tx, planned.entry, planned.account)
            tx.members.save_account(member.pk, planned.account)
            return planned

        return await self._runner.change(program_id, idempotency, effect, render)


def _as_spend(planned: rules.Reversal) -> Spend:
    """An award's reversal is written as a spend: its entry, draws and the lots' remainders."""
    return Spend(planned.entry, planned.account, planned.draws, planned.remaining)
