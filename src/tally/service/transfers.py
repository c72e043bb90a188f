"""Use case of transfers: points move from one member to another in one transaction.

Both members are locked in one global order (`accounts.locked_members`), so two transfers in
opposite directions at once queue instead of deadlocking, and both are brought up to date
first. The rule is `tally.rules.transfers`'.
"""

from __future__ import annotations

from datetime import datetime

from tally.commands import Idempotency, Reply, TransferCommand
from tally.errors import MemberNotFound
from tally.ports import Tx
from tally.rules import points as point_rules
from tally.rules import transfers as rules
from tally.service import accounts, enrolment
from tally.service.runner import Render, Runner


class Transfers:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def transfer(
        self,
        program_id: int,
        cmd: TransferCommand,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[rules.Transfer],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> rules.Transfer:
            rules.check_parties(cmd)
            sender_id, receiver_id = cmd.from_member_id, cmd.to_member_id
            states = accounts.locked_members(tx, program_id, [sender_id, receiver_id], now)
            if sender_id in states:  # the sender must exist; the receiver may be enrolled
                states = enrolment.locked_receiver(tx, program_id, receiver_id, states, now)
            for member_id in (sender_id, receiver_id):
                if member_id not in states:
                    raise MemberNotFound(f"Member {member_id} does not exist.")
            sender, receiver = states[sender_id].member, states[receiver_id].member
            point_rules.check_spendable(sender, cmd.points)  # before reading any lots
            lots = tx.lots.covering(sender.pk, cmd.points)
            planned = rules.plan_transfer(
                sender, receiver, lots, cmd, now=now, created_by=created_by
            )
            accounts.write_spend(tx, planned.sent, now)
            tx.members.save_account(sender.pk, planned.sent.account)
            accounts.write_credit(tx, planned.received, planned.lots, now)
            return planned

        return await self._runner.change(program_id, idempotency, effect, render)
