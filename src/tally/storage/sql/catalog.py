"""`CatalogRows` in SQL: rewards and redemptions."""

from __future__ import annotations

from datetime import datetime

from tally.domain import Member, Redemption, Reward
from tally.storage.sql import rows
from tally.storage.sql.rows import REDEMPTION_COLUMNS, REWARD_COLUMNS, to_micros
from tally.storage.sql.session import Session


class SqlCatalog:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def insert_reward(self, reward: Reward) -> None:
        self._s.run(
            f"INSERT INTO rewards ({REWARD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                reward.id,
                reward.program_id,
                reward.name,
                reward.points_cost,
                reward.stock,
                reward.active,
                reward.metadata,
                to_micros(reward.created_at),
            ),
        )

    def get_reward(self, program_id: int, reward_id: str, *, lock: bool = False) -> Reward | None:
        suffix = self._s.dialect.for_update if lock else ""
        row = self._s.one(
            f"SELECT {REWARD_COLUMNS} FROM rewards WHERE id = ? AND program_id = ?{suffix}",
            (reward_id, program_id),
        )
        return None if row is None else rows.reward(row)

    def list_rewards(self, program_id: int, *, offset: int, limit: int) -> list[Reward]:
        found = self._s.all(
            f"SELECT {REWARD_COLUMNS} FROM rewards WHERE program_id = ? "
            "ORDER BY created_at, id LIMIT ? OFFSET ?",
            (program_id, limit, offset),
        )
        return [rows.reward(r) for r in found]

    def count_rewards(self, program_id: int) -> int:
        row = self._s.one("SELECT COUNT(*) FROM rewards WHERE program_id = ?", (program_id,))
        return int(row[0])

    def update_reward(self, reward: Reward) -> None:
        self._s.run(
            "UPDATE rewards SET name = ?, points_cost = ?, stock = ?, active = ?, metadata = ? "
            "WHERE id = ?",
            (
                reward.name,
                reward.points_cost,
                reward.stock,
                reward.active,
                reward.metadata,
                reward.id,
            ),
        )

    def insert_redemption(self, redemption: Redemption) -> None:
        # The request's metadata is on the redeem entry that pays for the redemption (written
        # just before, in this transaction); the redemption's row keeps the same text.
        self._s.run(
            "INSERT INTO redemptions (id, program_id, member_pk, reward_id, quantity, points, "
            "status, transaction_id, created_at, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
            "(SELECT metadata FROM entries WHERE id = ?))",
            (
                redemption.id,
                redemption.program_id,
                redemption.member_pk,
                redemption.reward_id,
                redemption.quantity,
                redemption.points,
                redemption.status.value,
                redemption.transaction_id,
                to_micros(redemption.created_at),
                redemption.transaction_id,
            ),
        )

    def get_redemption(
        self, program_id: int, redemption_id: str, *, lock: bool = False
    ) -> Redemption | None:
        suffix = self._s.dialect.for_update if lock else ""
        row = self._s.one(
            f"SELECT {REDEMPTION_COLUMNS} FROM redemptions r JOIN members m ON m.pk = r.member_pk "
            f"WHERE r.id = ? AND r.program_id = ?{suffix}",
            (redemption_id, program_id),
        )
        return None if row is None else rows.redemption(row)

    def list_redemptions(self, member: Member, *, offset: int, limit: int) -> list[Redemption]:
        found = self._s.all(
            f"SELECT {REDEMPTION_COLUMNS} FROM redemptions r JOIN members m ON m.pk = r.member_pk "
            "WHERE r.member_pk = ? ORDER BY r.created_at DESC, r.id DESC LIMIT ? OFFSET ?",
            (member.pk, limit, offset),
        )
        return [rows.redemption(r) for r in found]

    def count_redemptions(self, member: Member) -> int:
        row = self._s.one("SELECT COUNT(*) FROM redemptions WHERE member_pk = ?", (member.pk,))
        return int(row[0])

    def cancel_redemption(self, redemption_id: str, *, refund_id: str, now: datetime) -> None:
        self._s.run(
            "UPDATE redemptions SET status = 'cancelled', refund_transaction_id = ?, "
            "cancelled_at = ? WHERE id = ?",
            (refund_id, to_micros(now), redemption_id),
        )

    def erase_redemption_metadata(self, member_pk: int) -> None:
        self._s.run(
            "UPDATE redemptions SET metadata = NULL WHERE member_pk = ? AND metadata IS NOT NULL",
            (member_pk,),
        )
