"""`MemberRows` in SQL: members, their counters, and the one query a change starts from.

That query reads the member with its program's expiry policy and the soonest moment anything
falls due for it (a pending award, a lot's expiry), locked when a change follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from tally.domain import Account, Member, Profile
from tally.ports import MemberState
from tally.storage.sql import rows
from tally.storage.sql.lots import SqlLots, open_lots_query
from tally.storage.sql.rows import MEMBER_COLUMNS, NEVER, from_micros, to_micros
from tally.storage.sql.session import Session

_LOCKED_MEMBER_COLUMNS = rows.member_columns("m")
_FIRST_LOTS_OF_MEMBER_ID = open_lots_query(
    "(SELECT pk FROM members WHERE program_id = ? AND member_id = ?)", after_position=False
)
_SAVE_ACCOUNT = (
    "UPDATE members SET balance = ?, debt = ?, pending = ?, lifetime_earned = ?, "
    "lifetime_redeemed = ?, lifetime_deducted = ?, lifetime_expired = ?, last_seq = ?, "
    "entry_count = ?, "
    "lifetime_transferred_in = ?, lifetime_transferred_out = ? WHERE pk = ?"
)
_STATES_PER_QUERY = 500


def _state_query(
    count: int, *, lock_suffix: str, with_expiration: bool, by: str = "m.member_id"
) -> str:
    """`count` members of a program by member_id (or by `m.pk`), with their program's policy
    and due times.

    Locked if asked, in primary-key order so concurrent bulk requests never deadlock. The
    sub-selects (the soonest moment anything falls due) take no parameters, so even a cached
    generic plan reads them from the partial indexes instead of scanning all lots.
    """
    # The points of the soonest-expiring open lots (all lots expiring at that instant).
    expiring = (
        ", (SELECT SUM(l.remaining) FROM lots l WHERE l.member_pk = m.pk "
        "AND l.remaining > 0 AND l.expires_at = (SELECT MIN(x.expires_at) FROM lots x "
        "WHERE x.member_pk = m.pk AND x.remaining > 0))"
        if with_expiration
        else ""
    )
    return (
        f"SELECT {_LOCKED_MEMBER_COLUMNS}, p.points_expire_after_days, "
        "(SELECT MIN(e.available_at) FROM entries e "
        "WHERE e.member_pk = m.pk AND e.status = 'pending'), "
        "(SELECT MIN(l.expires_at) FROM lots l "
        f"WHERE l.member_pk = m.pk AND l.remaining > 0){expiring} "
        "FROM members m JOIN programs p ON p.id = m.program_id "
        f"WHERE m.program_id = ? AND {by} IN ({', '.join('?' * count)}) "
        f"ORDER BY m.pk{lock_suffix}"
    )


_AFTER_MEMBER = len(MEMBER_COLUMNS.split(", "))  # where `_state_query`'s own columns start


def _state(row: Sequence[Any], at: int, *, with_expiration: bool) -> MemberState:
    policy, pending_due, soonest = row[_AFTER_MEMBER : _AFTER_MEMBER + 3]
    due = any(moment is not None and moment <= at for moment in (pending_due, soonest))
    upcoming = (
        (int(row[_AFTER_MEMBER + 3]), from_micros(soonest))
        if with_expiration and soonest is not None and soonest < NEVER
        else None
    )
    return MemberState(rows.member(row), policy, due, upcoming)


class SqlMembers:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def insert(self, program_id: int, profile: Profile, *, now: datetime) -> bool:
        row = self._s.one(
            "INSERT INTO members (program_id, member_id, email, name, metadata, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (program_id, member_id) DO NOTHING "
            "RETURNING pk",
            (
                program_id,
                profile.member_id,
                profile.email,
                profile.name,
                profile.metadata,
                to_micros(now),
            ),
        )
        return row is not None

    def get(self, program_id: int, member_id: str) -> Member | None:
        row = self._s.one(
            f"SELECT {MEMBER_COLUMNS} FROM members WHERE program_id = ? AND member_id = ?",
            (program_id, member_id),
        )
        return None if row is None else rows.member(row)

    def page(self, program_id: int, *, offset: int, limit: int) -> list[Member]:
        found = self._s.all(
            f"SELECT {MEMBER_COLUMNS} FROM members WHERE program_id = ? ORDER BY pk "
            "LIMIT ? OFFSET ?",
            (program_id, limit, offset),
        )
        return [rows.member(r) for r in found]

    def count(self, program_id: int) -> int:
        row = self._s.one("SELECT COUNT(*) FROM members WHERE program_id = ?", (program_id,))
        return int(row[0])

    def state(
        self, program_id: int, member_id: str, *, now: datetime, lock: bool
    ) -> MemberState | None:
        return self._one_state(program_id, member_id, now=now, lock=lock, with_expiration=False)

    def state_with_expiration(
        self, program_id: int, member_id: str, *, now: datetime
    ) -> MemberState | None:
        return self._one_state(program_id, member_id, now=now, lock=False, with_expiration=True)

    def _one_state(
        self, program_id: int, member_id: str, *, now: datetime, lock: bool, with_expiration: bool
    ) -> MemberState | None:
        query = _state_query(
            1, lock_suffix=self._s.lock_suffix(lock), with_expiration=with_expiration
        )
        found = self._s.all(query, (program_id, member_id))
        return _state(found[0], to_micros(now), with_expiration=with_expiration) if found else None

    def state_for_spend(
        self, program_id: int, member_id: str, *, now: datetime, points: int
    ) -> MemberState | None:
        query = _state_query(1, lock_suffix=self._s.lock_suffix(True), with_expiration=False)
        found = self._s.run(query, (program_id, member_id))
        # A spend's first lots go out right behind the member's statement and come back with it
        # (one round trip on PostgreSQL's pipeline). They are read once the member's row is
        # locked, so they are the lots as the lock's previous holder left them.
        lots = self._s.run(_FIRST_LOTS_OF_MEMBER_ID, (program_id, member_id))
        member_rows, first_lots = list(found.fetchall()), list(lots.fetchall())
        if not member_rows:
            return None
        state = _state(member_rows[0], to_micros(now), with_expiration=False)
        spend_lots = SqlLots(self._s).covering(state.member.pk, points, first_lots)
        return replace(state, spend_lots=spend_lots)

    def states(
        self, program_id: int, member_ids: list[str], *, now: datetime, lock: bool = True
    ) -> dict[str, MemberState]:
        at = to_micros(now)
        suffix = self._s.lock_suffix(lock)
        keys: list[Any] = member_ids
        by = "m.member_id"
        if suffix and len(member_ids) > _STATES_PER_QUERY:
            # Each query locks its rows in primary-key order; across queries the order must be
            # the same global one, or two bulks over overlapping members (in other orders)
            # deadlock. So the keys come first (unlocked), and each query takes the next ones.
            keys, by = sorted(self._primary_keys(program_id, member_ids)), "m.pk"
        found = self._chunked(
            lambda count: _state_query(count, lock_suffix=suffix, with_expiration=False, by=by),
            program_id,
            keys,
        )
        return {row[2]: _state(row, at, with_expiration=False) for row in found}

    def _primary_keys(self, program_id: int, member_ids: list[str]) -> list[int]:
        def query(count: int) -> str:
            return (
                "SELECT pk FROM members WHERE program_id = ? "
                f"AND member_id IN ({', '.join('?' * count)})"
            )

        return [row[0] for row in self._chunked(query, program_id, member_ids)]

    def _chunked(
        self, query: Callable[[int], str], program_id: int, keys: Sequence[Any]
    ) -> list[Any]:
        """The rows of `query(n)` for `keys`, at most 500 keys a statement, in key order.

        Every statement is sent before any result is read (one round trip on PostgreSQL's
        pipeline); they still run, and take their locks, one after the other."""
        size = _STATES_PER_QUERY
        chunks = [keys[start : start + size] for start in range(0, len(keys), size)]
        sent = [self._s.run(query(len(chunk)), (program_id, *chunk)) for chunk in chunks]
        return [row for cursor in sent for row in cursor.fetchall()]

    def save_account(self, member_pk: int, account: Account) -> None:
        self._s.run(_SAVE_ACCOUNT, rows.account_row(member_pk, account))

    def save_accounts(self, accounts: dict[int, Account]) -> None:
        self._s.run_many(_SAVE_ACCOUNT, [rows.account_row(pk, a) for pk, a in accounts.items()])

    def save_profile(self, member_pk: int, profile: Profile) -> None:
        self._s.run(
            "UPDATE members SET email = ?, name = ?, metadata = ? WHERE pk = ?",
            (profile.email, profile.name, profile.metadata, member_pk),
        )

    def erase(self, member_pk: int, *, now: datetime) -> None:
        self._s.run(
            "UPDATE members SET email = NULL, name = NULL, metadata = NULL, "
            "erased_at = COALESCE(erased_at, ?) WHERE pk = ?",
            (to_micros(now), member_pk),
        )
