"""The storage contract: what the service needs from a database, and nothing more.

A `Store` runs a unit of work (a function of a `Tx`) atomically: all of it commits or none of it
does, and the caller hears back only after the commit is durable. The work decides *what*
happens; the store decides *how* it reaches the disk (alone, or grouped with other work into one
commit, each in its own savepoint so one failure never undoes another).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from tally.domain import (
    Account,
    ApiKey,
    Draw,
    Entry,
    HistoryQuery,
    Lot,
    Member,
    Profile,
    Program,
    Redemption,
    Reward,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A response kept under an Idempotency-Key, to be replayed byte for byte."""

    fingerprint: str
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key found by the hash of its secret."""

    key_id: str
    program_id: int
    scope: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """Figures recomputed from a member's rows, to compare with the stored counters."""

    member: Member
    posted_sums: dict[str, int]  # points of posted entries, by type
    pending_total: int
    entry_count: int
    open_lot_total: int
    chain_breaks: list[tuple[str, int | None, int]]  # (entry, its balance_after, running sum)


@dataclass(frozen=True, slots=True)
class MemberState:
    """A member, its program's expiry policy, and whether work is due for it."""

    member: Member
    expire_after_days: int | None
    due: bool
    # The soonest lot expiry (points, when); only read when asked for (`with_expiration`),
    # None otherwise and when nothing will expire.
    next_expiration: tuple[int, datetime] | None = None
    # The open lots a spend of `spending` points draws on (as `Tx.open_lots(covering=...)`),
    # read together with the member; None when not asked for.
    spend_lots: list[Lot] | None = None


class Tx(Protocol):
    """The operations available inside one transaction."""

    # programs and keys
    def ensure_program(self, name: str, *, now: datetime) -> Program: ...
    def get_program(self, program_id: int) -> Program: ...
    def count_programs(self) -> int: ...
    def set_expiry_policy(self, program_id: int, days: int | None) -> None: ...
    def insert_key(
        self,
        *,
        key_id: str,
        program_id: int,
        scope: str,
        secret_hash: str,
        prefix: str,
        now: datetime,
    ) -> None: ...
    def find_key(self, secret_hash: str) -> KeyRecord | None: ...
    def list_keys(self) -> list[ApiKey]: ...
    def revoke_key(self, key_id: str, *, now: datetime) -> bool: ...

    # idempotency
    def claim_idempotency_key(self, program_id: int, key: str) -> bool: ...
    def get_reply(self, program_id: int, key: str) -> StoredReply | None: ...
    def put_reply(
        self, program_id: int, key: str, reply: StoredReply, *, now: datetime
    ) -> None: ...
    def purge_replies(self, *, before: datetime) -> int: ...

    # members
    def insert_member(self, program_id: int, profile: Profile, *, now: datetime) -> bool: ...
    def get_member(self, program_id: int, member_id: str) -> Member | None: ...
    def list_members(self, program_id: int, *, offset: int, limit: int) -> list[Member]: ...
    def count_members(self, program_id: int) -> int: ...
    def member_state(
        self,
        program_id: int,
        member_id: str,
        *,
        now: datetime,
        lock: bool,
        with_expiration: bool = False,
        spending: int | None = None,
    ) -> MemberState | None:
        """The member's state; with `spending`, also the lots that spend would draw on."""
        ...

    def member_states(
        self, program_id: int, member_ids: list[str], *, now: datetime, lock: bool
    ) -> dict[str, MemberState]: ...
    def save_account(self, member_pk: int, account: Account) -> None: ...
    def save_accounts(self, accounts: dict[int, Account]) -> None: ...

    # ledger entries
    def insert_entry(self, entry: Entry) -> None: ...
    def insert_entries(self, entries: list[Entry]) -> None: ...
    def post_pending(
        self, entry_id: str, *, seq: int, balance_after: int, posted_at: datetime
    ) -> None: ...
    def cancel_pending(self, entry_id: str) -> None: ...
    def get_entry(self, program_id: int, entry_id: str) -> Entry | None: ...
    def list_entries(
        self, member: Member, query: HistoryQuery, *, offset: int, limit: int, newest_first: bool
    ) -> list[Entry]: ...
    def count_entries(self, member: Member, query: HistoryQuery) -> int: ...
    def pending_awards(self, member_pk: int, *, due_by: datetime | None = None) -> list[Entry]: ...

    # lots
    def insert_lot(self, lot: Lot, *, member_pk: int) -> None: ...
    def insert_lots(self, lots: list[tuple[Lot, int]]) -> None: ...
    def open_lots(
        self, member_pk: int, *, expiring_by: datetime | None = None, covering: int | None = None
    ) -> list[Lot]:
        """Open lots in spend order: all, those expiring by a time, or just enough to cover."""
        ...

    def set_remaining(self, lot_id: str, remaining: int) -> None: ...
    def insert_draws(self, spend_id: str, draws: list[Draw]) -> None: ...
    def members_with_due_work(self, *, now: datetime, limit: int) -> list[tuple[int, str]]: ...

    # rewards and redemptions
    def insert_reward(self, reward: Reward) -> None: ...
    def get_reward(
        self, program_id: int, reward_id: str, *, lock: bool = False
    ) -> Reward | None: ...
    def list_rewards(self, program_id: int, *, offset: int, limit: int) -> list[Reward]: ...
    def count_rewards(self, program_id: int) -> int: ...
    def update_reward(self, reward: Reward) -> None: ...
    def insert_redemption(self, redemption: Redemption) -> None: ...
    def get_redemption(
        self, program_id: int, redemption_id: str, *, lock: bool = False
    ) -> Redemption | None: ...
    def list_redemptions(self, member: Member, *, offset: int, limit: int) -> list[Redemption]: ...
    def count_redemptions(self, member: Member) -> int: ...
    def cancel_redemption(self, redemption_id: str, *, refund_id: str, now: datetime) -> None: ...

    # verification
    def ledger_checks(self) -> Iterator[LedgerCheck]: ...
    def unbalanced_spends(self) -> list[tuple[str, int, int]]: ...


class Store(Protocol):
    """A database Tally can run on."""

    def transact(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in one transaction on the calling thread and commit it."""
        ...

    async def write(self, work: Callable[[Tx], T]) -> T:
        """Run `work` atomically, possibly in a group commit; return after it is durable."""
        ...

    async def read(self, work: Callable[[Tx], T], *, one_statement: bool = False) -> T:
        """Run `work` on a consistent snapshot; it must not write.

        With `one_statement=True`, `work` issues exactly one statement, which sees a consistent
        snapshot by itself: the store may skip opening a transaction (one round trip instead of
        three on PostgreSQL). A second statement raises.
        """
        ...

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; return the ids of those applied."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds for the running event loop; await it before that loop
        ends (the server's lifespan does; elsewhere use `tally.maintenance.run_async`)."""
        ...

    def close(self) -> None: ...
