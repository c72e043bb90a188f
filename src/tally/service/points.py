"""Use cases of points: award (one or in bulk), deduct, and read balances and history.

Each loads the member through `accounts`, asks `tally.rules.points` what the change is, and
saves it; the rules themselves are not here.
"""

from __future__ import annotations

from datetime import datetime

from tally.commands import (
    AwardCommand,
    BalanceView,
    BulkCommand,
    BulkOutcome,
    DeductCommand,
    Idempotency,
    Listing,
    Posting,
    Reply,
)
from tally.domain import Entry, EntryType, HistoryQuery, Lot, Member, Page
from tally.errors import TransactionNotFound
from tally.ports import Tx
from tally.rules import points as rules
from tally.service import accounts, enrolment
from tally.service.runner import Render, Runner


class Points:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def award(
        self,
        program_id: int,
        cmd: AwardCommand,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[Posting],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Posting:
            locked = enrolment.locked_member(tx, program_id, cmd.member_id, now)
            posting = rules.plan_award(
                locked.member,
                cmd,
                expire_after_days=locked.expire_after_days,
                now=now,
                created_by=created_by,
            )
            accounts.write_awards(tx, [posting], now)
            return posting

        lane = (program_id, cmd.member_id)
        return await self._runner.change(program_id, idempotency, effect, render, lane=lane)

    async def award_bulk(
        self,
        program_id: int,
        cmd: BulkCommand,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[BulkOutcome],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> BulkOutcome:
            states = enrolment.locked_for_bulk(tx, program_id, cmd, now)
            # Every member of one program shares its expiry policy.
            policy = next((s.expire_after_days for s in states.values()), None)
            members = {member_id: state.member for member_id, state in states.items()}
            outcome = rules.plan_bulk(
                cmd, members, expire_after_days=policy, now=now, created_by=created_by
            )
            accounts.write_awards(tx, [posting for _, posting in outcome.postings], now)
            return outcome

        # Off the event loop: up to 10,000 awards must not hold up every other request.
        return await self._runner.change(program_id, idempotency, effect, render, in_thread=True)

    async def deduct(
        self,
        program_id: int,
        cmd: DeductCommand,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[Posting],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Posting:
            locked = accounts.locked_for_spend(tx, program_id, cmd.member_id, now, cmd.points)
            return accounts.spend(
                tx,
                locked.member,
                EntryType.DEDUCT,
                cmd.points,
                reason=cmd.reason,
                now=now,
                created_by=created_by,
                reference=cmd.reference,
                metadata=cmd.metadata,
                lots=locked.spend_lots,
            )

        lane = (program_id, cmd.member_id)
        return await self._runner.change(program_id, idempotency, effect, render, lane=lane)

    async def balance(self, program_id: int, member_id: str) -> BalanceView:
        def read(tx: Tx, now: datetime, writable: bool) -> BalanceView:
            state = accounts.current_state(
                tx, program_id, member_id, now, writable, with_expiration=True
            )
            member = state.member
            return BalanceView(member.member_id, member.account, state.next_expiration)

        return await self._runner.view_one(read)

    async def history(
        self, program_id: int, member_id: str, query: HistoryQuery, page: Page
    ) -> Listing[Entry]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Entry]:
            member = accounts.current_member(tx, program_id, member_id, now, writable)
            return _history_page(tx, member, query, page)

        return await self._runner.view(read)

    async def lots(self, program_id: int, member_id: str, page: Page) -> Listing[Lot]:
        """The member's open lots in spend order: what is left of each award, refund and
        transfer received, and when it expires (after what is due by now has been applied)."""

        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Lot]:
            member = accounts.current_member(tx, program_id, member_id, now, writable)
            total = tx.lots.count_open(member.pk)
            if page.offset >= total:
                return Listing([], total, page)
            return Listing(
                tx.lots.page_open(member.pk, offset=page.offset, limit=page.size), total, page
            )

        return await self._runner.view(read)

    async def transaction(self, program_id: int, transaction_id: str) -> Entry:
        def read(tx: Tx, now: datetime, writable: bool) -> Entry:
            entry = entry_or_raise(tx, program_id, transaction_id)
            # Bring its member up to date first: a pending award may have posted by now.
            accounts.current_member(tx, program_id, entry.member_id, now, writable)
            return tx.entries.get(program_id, transaction_id) or entry

        return await self._runner.view(read)


def entry_or_raise(tx: Tx, program_id: int, transaction_id: str) -> Entry:
    entry = tx.entries.get(program_id, transaction_id)
    if entry is None:
        raise TransactionNotFound(f"Transaction {transaction_id} does not exist.")
    return entry


def _history_page(tx: Tx, member: Member, query: HistoryQuery, page: Page) -> Listing[Entry]:
    total = tx.entries.count(member, query) if query.filtered else member.account.entry_count
    if page.offset >= total:
        return Listing([], total, page)
    # Pages past the middle are read from the oldest end, so the last page of a long history
    # costs as little as the first.
    from_oldest = total - page.offset - page.size
    if page.offset > total // 2:
        limit = page.size + min(from_oldest, 0)
        rows = tx.entries.page(
            member, query, offset=max(from_oldest, 0), limit=limit, newest_first=False
        )
        return Listing(rows[::-1], total, page)
    rows = tx.entries.page(member, query, offset=page.offset, limit=page.size, newest_first=True)
    return Listing(rows, total, page)
