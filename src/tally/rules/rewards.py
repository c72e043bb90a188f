"""The catalog's rules: what a redemption costs, what it does to stock, what a change to a
reward keeps, and which redemptions can be cancelled. Pure functions of values; the points
themselves move by the spend and refund rules in `tally.rules.points`."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from tally import ids
from tally.commands import RewardChanges, RewardDraft
from tally.domain import Entry, Member, Redemption, RedemptionStatus, Reward
from tally.errors import NotCancellable, OutOfStock, RewardInactive


def new_reward(draft: RewardDraft, *, program_id: int, now: datetime) -> Reward:
    return Reward(
        id=ids.new_id("rwd_", now),
        program_id=program_id,
        name=draft.name,
        points_cost=draft.points_cost,
        stock=draft.stock,
        active=draft.active,
        metadata=draft.metadata,
        created_at=now,
    )


def changed_reward(reward: Reward, changes: RewardChanges) -> Reward:
    """The reward with the fields a PATCH named; `stock` and `metadata` may be set to null."""
    return replace(
        reward,
        name=reward.name if changes.name is None else changes.name,
        points_cost=reward.points_cost if changes.points_cost is None else changes.points_cost,
        stock=changes.stock if changes.stock_set else reward.stock,
        active=reward.active if changes.active is None else changes.active,
        metadata=changes.metadata if changes.metadata_set else reward.metadata,
    )


def redemption_cost(reward: Reward, quantity: int) -> int:
    """The points `quantity` of `reward` cost; only an active reward in stock can be redeemed."""
    if not reward.active:
        raise RewardInactive(f"Reward {reward.id} is not active.")
    if reward.stock is not None and reward.stock < quantity:
        raise OutOfStock(f"Reward {reward.id} has {reward.stock} in stock, {quantity} asked for.")
    return reward.points_cost * quantity


def new_redemption(
    member: Member, reward: Reward, quantity: int, *, points: int, entry: Entry, now: datetime
) -> Redemption:
    """A completed redemption of `quantity` of `reward`, paid for by the spend `entry`."""
    return Redemption(
        id=ids.new_id("red_", now),
        program_id=member.program_id,
        member_pk=member.pk,
        member_id=member.member_id,
        reward_id=reward.id,
        quantity=quantity,
        points=points,
        status=RedemptionStatus.COMPLETED,
        transaction_id=entry.id,
        refund_transaction_id=None,
        created_at=now,
        cancelled_at=None,
    )


def restocked(reward: Reward, change: int) -> Reward | None:
    """The reward with `change` more units in stock; None when its stock is unlimited."""
    if reward.stock is None:
        return None
    return replace(reward, stock=reward.stock + change)


def check_cancellable(redemption: Redemption) -> None:
    """A redemption is cancelled (and refunded) at most once."""
    if redemption.status != RedemptionStatus.COMPLETED:
        raise NotCancellable(f"Redemption {redemption.id} is already cancelled.")


def refund_reason(reward: Reward, redemption: Redemption) -> str:
    return f"Refund: {reward.name} ({redemption.id})"


def cancelled(redemption: Redemption, *, refund_id: str, now: datetime) -> Redemption:
    return replace(
        redemption,
        status=RedemptionStatus.CANCELLED,
        refund_transaction_id=refund_id,
        cancelled_at=now,
    )
