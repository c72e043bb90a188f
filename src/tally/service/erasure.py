"""Use case of erasure (api.md section 9): a member's personal data removed for good.

In one transaction: the member's email, name and metadata, the metadata of its transactions and
redemptions, and every copy of them Tally keeps elsewhere: the `data` of earlier events (what the
feed and webhooks still send) and the answers stored under Idempotency-Keys (what a retry
replays). The ledger stays: ids, points, reasons, references, balances, and the member can still
earn and spend. What the rules remove is `tally.rules.members`'.
"""

from __future__ import annotations

from datetime import datetime

from tally.commands import Idempotency, Reply
from tally.domain import Member
from tally.ports import Tx
from tally.rules import members as rules
from tally.service import accounts, outbox
from tally.service.runner import Render, Runner


class Erasure:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def erase(
        self,
        program_id: int,
        member_id: str,
        *,
        idempotency: Idempotency | None,
        render: Render[Member],
    ) -> Reply:
        """Erase the member's personal data; answer the member as it now reads.

        Erasing again removes whatever personal data arrived since (the metadata of later
        transactions) and keeps the first `erased_at`; only the first writes `member.erased`.
        """

        def effect(tx: Tx, now: datetime) -> Member:
            member = accounts.locked_member(tx, program_id, member_id, now).member
            first = member.erased_at is None
            tx.members.erase(member.pk, now=now)
            tx.entries.erase_metadata(member.pk)
            tx.catalog.erase_redemption_metadata(member.pk)
            _erase_copies(tx, program_id, member.member_id)
            # Written after the earlier events were scrubbed: this one has nothing to remove.
            after = rules.erased(member, now=now)
            if first:
                outbox.member_erased(tx, after, now)
            return after

        return await self._runner.change(program_id, idempotency, effect, render)


def _erase_copies(tx: Tx, program_id: int, member_id: str) -> None:
    """The member's personal data out of the events' bodies and the stored replies."""
    text = rules.mentions(member_id)
    for event in tx.events.containing(program_id, text):
        body = rules.without_personal_data(event.body, member_id)
        if body is not None:
            tx.events.rewrite(event.id, body.decode())
    for key, stored in tx.replies.containing(program_id, text.encode()).items():
        body = rules.without_personal_data(stored, member_id)
        if body is not None:
            tx.replies.rewrite(program_id, key, body)
