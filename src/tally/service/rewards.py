"""Use cases of the reward catalog: rewards, redemptions, and cancelling a redemption (which
refunds its points and puts the stock back). What each costs and allows is `tally.rules`'."""

from __future__ import annotations

from datetime import datetime

from tally.commands import (
    Idempotency,
    Listing,
    RedeemCommand,
    RedemptionResult,
    Reply,
    RewardChanges,
    RewardDraft,
)
from tally.domain import EntryType, Page, Redemption, Reward
from tally.errors import MemberNotFound, RedemptionNotFound, RewardNotFound
from tally.ports import Tx
from tally.rules import rewards as rules
from tally.service import accounts, outbox
from tally.service.runner import Render, Runner


class Rewards:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def create(
        self,
        program_id: int,
        draft: RewardDraft,
        *,
        idempotency: Idempotency | None,
        render: Render[Reward],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Reward:
            reward = rules.new_reward(draft, program_id=program_id, now=now)
            tx.catalog.insert_reward(reward)
            outbox.reward_changed(tx, reward, now, created=True)
            return reward

        return await self._runner.change(program_id, idempotency, effect, render)

    async def get(self, program_id: int, reward_id: str) -> Reward:
        def read(tx: Tx, now: datetime, writable: bool) -> Reward:
            return _reward_or_raise(tx, program_id, reward_id)

        return await self._runner.view_one(read)

    async def listing(self, program_id: int, page: Page) -> Listing[Reward]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Reward]:
            rows = tx.catalog.list_rewards(program_id, offset=page.offset, limit=page.size)
            return Listing(rows, tx.catalog.count_rewards(program_id), page)

        return await self._runner.view(read)

    async def update(self, program_id: int, reward_id: str, changes: RewardChanges) -> Reward:
        def work(tx: Tx) -> Reward:
            reward = _reward_or_raise(tx, program_id, reward_id, lock=True)
            reward = rules.changed_reward(reward, changes)
            tx.catalog.update_reward(reward)
            outbox.reward_changed(tx, reward, self._runner.clock(), created=False)
            return reward

        return await self._runner.write(work)

    async def redeem(
        self,
        program_id: int,
        cmd: RedeemCommand,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[RedemptionResult],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> RedemptionResult:
            member = accounts.locked_member(tx, program_id, cmd.member_id, now).member
            reward = _reward_for_stock_change(tx, program_id, cmd.reward_id)
            points = rules.redemption_cost(reward, cmd.quantity)
            posting = accounts.spend(
                tx,
                member,
                EntryType.REDEEM,
                points,
                reason=reward.name,
                now=now,
                created_by=created_by,
                metadata=cmd.metadata,
            )
            restocked = rules.restocked(reward, -cmd.quantity)
            if restocked is not None:
                tx.catalog.update_reward(restocked)
            redemption = rules.new_redemption(
                member, reward, cmd.quantity, points=points, entry=posting.entry, now=now
            )
            tx.catalog.insert_redemption(redemption)
            outbox.redemption_changed(tx, redemption, now, created=True)
            return RedemptionResult(redemption, posting.entry)

        return await self._runner.change(program_id, idempotency, effect, render)

    async def cancel_redemption(
        self,
        program_id: int,
        redemption_id: str,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[RedemptionResult],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> RedemptionResult:
            found = _redemption_or_raise(tx, program_id, redemption_id)
            locked = accounts.locked_member(tx, program_id, found.member_id, now)
            redemption = _redemption_or_raise(tx, program_id, redemption_id, lock=True)
            rules.check_cancellable(redemption)
            reward = _reward_for_stock_change(tx, program_id, redemption.reward_id)
            posting = accounts.refund(
                tx,
                locked,
                redemption.points,
                reason=rules.refund_reason(reward, redemption),
                now=now,
                created_by=created_by,
            )
            restocked = rules.restocked(reward, redemption.quantity)
            if restocked is not None:
                tx.catalog.update_reward(restocked)
            tx.catalog.cancel_redemption(redemption.id, refund_id=posting.entry.id, now=now)
            cancelled = rules.cancelled(redemption, refund_id=posting.entry.id, now=now)
            outbox.redemption_changed(tx, cancelled, now, created=False)
            return RedemptionResult(cancelled, posting.entry)

        return await self._runner.change(program_id, idempotency, effect, render)

    async def redemption(self, program_id: int, redemption_id: str) -> Redemption:
        def read(tx: Tx, now: datetime, writable: bool) -> Redemption:
            return _redemption_or_raise(tx, program_id, redemption_id)

        return await self._runner.view_one(read)

    async def redemptions(self, program_id: int, member_id: str, page: Page) -> Listing[Redemption]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Redemption]:
            member = tx.members.get(program_id, member_id)
            if member is None:
                raise MemberNotFound(f"Member {member_id} does not exist.")
            rows = tx.catalog.list_redemptions(member, offset=page.offset, limit=page.size)
            return Listing(rows, tx.catalog.count_redemptions(member), page)

        return await self._runner.view(read)


def _reward_or_raise(tx: Tx, program_id: int, reward_id: str, *, lock: bool = False) -> Reward:
    reward = tx.catalog.get_reward(program_id, reward_id, lock=lock)
    if reward is None:
        raise RewardNotFound(f"Reward {reward_id} does not exist.")
    return reward


def _reward_for_stock_change(tx: Tx, program_id: int, reward_id: str) -> Reward:
    """The reward a redemption (or its cancellation) takes from or gives back to, locked only
    when its stock is limited: an unlimited reward's row never changes, so locking it would
    only make every redemption of it wait for the one before.

    If a concurrent PATCH limits the stock after the unlocked read, this change simply comes
    first (as if made before the PATCH); the stock the PATCH sets is the stock from then on.
    """
    reward = _reward_or_raise(tx, program_id, reward_id)
    if reward.stock is None:
        return reward
    return _reward_or_raise(tx, program_id, reward_id, lock=True)


def _redemption_or_raise(
    tx: Tx, program_id: int, redemption_id: str, *, lock: bool = False
) -> Redemption:
    redemption = tx.catalog.get_redemption(program_id, redemption_id, lock=lock)
    if redemption is None:
        raise RedemptionNotFound(f"Redemption {redemption_id} does not exist.")
    return redemption
