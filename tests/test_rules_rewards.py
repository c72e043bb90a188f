"""The rules of `tally.rules.rewards`: cost, stock, catalog changes, cancellable redemptions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tally.commands import RewardChanges, RewardDraft
from tally.domain import Redemption, RedemptionStatus, Reward
from tally.errors import NotCancellable, OutOfStock, RewardInactive, TallyError
from tally.rules import rewards as rules
from tests.ledger_support import at

NOW = at("2026-03-01")
REWARD = rules.new_reward(RewardDraft("Mug", 250, stock=3), program_id=1, now=NOW)


@pytest.mark.parametrize(
    ("stock", "active", "quantity", "outcome"),
    [
        (3, True, 1, 250),
        (3, True, 3, 750),
        (None, True, 1000, 250_000),
        (3, True, 4, OutOfStock),
        (0, True, 1, OutOfStock),
        (None, False, 1, RewardInactive),
        (3, False, 1, RewardInactive),  # inactive is said first
    ],
)
def test_a_redemption_costs_points_times_quantity_of_an_active_reward_in_stock(
    stock: int | None, active: bool, quantity: int, outcome: int | type[TallyError]
) -> None:
    reward = replace(REWARD, stock=stock, active=active)
    if isinstance(outcome, int):
        assert rules.redemption_cost(reward, quantity) == outcome
    else:
        with pytest.raises(outcome):
            rules.redemption_cost(reward, quantity)


@pytest.mark.parametrize(("stock", "change", "after"), [(3, -1, 2), (0, 2, 2), (None, -5, None)])
def test_stock_moves_with_redemptions_unless_it_is_unlimited(
    stock: int | None, change: int, after: int | None
) -> None:
    changed = rules.restocked(replace(REWARD, stock=stock), change)
    assert (None if changed is None else changed.stock) == after


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (RewardChanges(), REWARD),
        (RewardChanges(name="Cup", points_cost=10), replace(REWARD, name="Cup", points_cost=10)),
        (RewardChanges(stock=None, stock_set=True), replace(REWARD, stock=None)),
        (RewardChanges(active=False), replace(REWARD, active=False)),
        (RewardChanges(metadata='{"a":1}', metadata_set=True), replace(REWARD, metadata='{"a":1}')),
    ],
)
def test_a_reward_change_keeps_every_field_it_does_not_name(
    changes: RewardChanges, expected: Reward
) -> None:
    assert rules.changed_reward(REWARD, changes) == expected


def test_a_redemption_is_cancelled_once() -> None:
    redemption = Redemption(
        "red_1", 1, 7, "m", REWARD.id, 1, 250, RedemptionStatus.COMPLETED, "txn_1", None, NOW, None
    )
    rules.check_cancellable(redemption)
    cancelled = rules.cancelled(redemption, refund_id="txn_2", now=NOW)
    assert (cancelled.status, cancelled.refund_transaction_id) == (
        RedemptionStatus.CANCELLED,
        "txn_2",
    )
    with pytest.raises(NotCancellable):
        rules.check_cancellable(cancelled)
