"""Use cases of time: cancel a pending award before it posts, and the sweep that posts pending
awards and expires lots on time even when nobody reads the member."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from tally.commands import Clock, Idempotency, Posting, Reply, SweepReport
from tally.ports import Tx
from tally.rules import points as rules
from tally.service import accounts, outbox
from tally.service.imports import IMPORT_KEY_PREFIX
from tally.service.points import entry_or_raise
from tally.service.runner import IDEMPOTENCY_RETENTION, Render, Runner


class Lifecycle:
    def __init__(self, runner: Runner, *, retention: timedelta = timedelta(days=30)) -> None:
        self._runner = runner
        self._retention = retention  # of events and finished webhook deliveries

    async def cancel_award(
        self,
        program_id: int,
        transaction_id: str,
        *,
        idempotency: Idempotency | None,
        render: Render[Posting],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Posting:
            entry = entry_or_raise(tx, program_id, transaction_id)
            member = accounts.locked_member(tx, program_id, entry.member_id, now).member
            # Read again under the member's lock: it may have posted or been cancelled since.
            entry = tx.entries.get(program_id, transaction_id) or entry
            posting = rules.plan_cancel_award(entry, member)
            tx.entries.cancel_pending(entry.id, at=now)
            tx.members.save_account(member.pk, posting.account)
            outbox.transaction_cancelled(tx, posting.entry, now)
            return posting

        return await self._runner.change(program_id, idempotency, effect, render)

    async def sweep(self, *, batch: int = 100, rounds: int = 10_000) -> SweepReport:
        """Apply everything due, `batch` members per commit; safe from many processes at once.
        Then drop old idempotency replies, and events and finished webhook deliveries older
        than the retention period."""
        runner = self._runner
        members = await self.apply_due(batch=batch, rounds=rounds)
        purged = await runner.write(
            lambda tx: tx.replies.purge(
                before=runner.clock() - IDEMPOTENCY_RETENTION, keep_prefix=IMPORT_KEY_PREFIX
            )
        )
        deliveries = await runner.write(
            lambda tx: tx.webhooks.purge(before=runner.clock() - self._retention)
        )
        events = await runner.write(
            lambda tx: tx.events.purge(before=runner.clock() - self._retention)
        )
        return SweepReport(members, purged, events, deliveries)

    async def apply_due(self, *, batch: int = 100, rounds: int = 10_000) -> int:
        """Bring every member with work due up to date, `batch` members per commit; return
        how many were."""
        runner = self._runner
        members = 0
        for _ in range(rounds):
            due = await runner.store.read(
                lambda tx: tx.audit.members_with_due_work(now=runner.clock(), limit=batch)
            )
            if due:
                await runner.write(partial(_catch_up_members, members=due, clock=runner.clock))
                members += len(due)
            if len(due) < batch:
                break
        return members


def _catch_up_members(tx: Tx, *, members: list[tuple[int, str]], clock: Clock) -> None:
    now = clock()
    for program_id, member_id in members:
        accounts.locked_member(tx, program_id, member_id, now)
