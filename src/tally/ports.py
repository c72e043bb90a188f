"""The storage contract: what the service needs from a database, split by role.

A `Store` runs a unit of work (a function of a `Tx`) atomically: all of it commits or none of it
does, and the caller hears back only after the commit is durable. The work decides *what*
happens; the store decides *how* it reaches the disk (alone, or grouped with other work into one
commit, each in its own savepoint so one failure never undoes another).

A `Tx` is a handful of small interfaces, one per role, each a few named operations:
- the ledger's own rows: `members`, `entries`, `lots`, `catalog` (rewards and redemptions) and
  `replies` (what an Idempotency-Key answered);
- `events`: the outbox integrations read, written with the changes it reports;
- `webhooks`: the endpoints events are sent to, and each delivery's attempts;
- administration: `programs` and `keys`;
- `audit`: what `tally verify` and the sweep read across every member.
Nothing here says SQL: `tally.storage` implements it, once, for SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from tally.domain import (
    Account,
    ApiKey,
    Debt,
    Delivery,
    DeliveryStatus,
    Draw,
    Entry,
    Event,
    FeedPosition,
    HistoryQuery,
    Lot,
    Member,
    Profile,
    Program,
    Redemption,
    Reward,
    WebhookEndpoint,
)

T = TypeVar("T")


class Conflict(Exception):
    """The database aborted the transaction to break a lock conflict (a deadlock or a
    serialization failure): nothing was committed, and the same work may simply run again."""


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
    # Points of posted reversals, by the type of the row each reverses ("award", "deduct").
    reversed_sums: dict[str, int] = dataclasses.field(default_factory=dict)
    owed: int = 0  # what the member's reversals of awards took that no lot has yet paid back
    held_and_owed: tuple[int, int] = (0, 0)  # the balance as stored: at most one is not zero


@dataclass(frozen=True, slots=True)
class MemberState:
    """A member, its program's expiry policy, and whether work is due for it."""

    member: Member
    expire_after_days: int | None
    due: bool
    # The soonest lot expiry (points, when), read by `MemberRows.state_with_expiration` only;
    # None otherwise and when nothing will expire.
    next_expiration: tuple[int, datetime] | None = None
    # The open lots a spend draws on, read by `MemberRows.state_for_spend` only.
    spend_lots: list[Lot] | None = None


# The ledger's own rows.


class MemberRows(Protocol):
    """Members, their counters (the `Account`) and the state a change starts from."""

    def insert(self, program_id: int, profile: Profile, *, now: datetime) -> bool:
        """False when the program already has a member with this id."""
        ...

    def get(self, program_id: int, member_id: str) -> Member | None: ...
    def page(self, program_id: int, *, offset: int, limit: int) -> list[Member]: ...
    def count(self, program_id: int) -> int: ...

    def state(
        self, program_id: int, member_id: str, *, now: datetime, lock: bool
    ) -> MemberState | None:
        """The member with its policy and whether work is due by `now`; locked if asked."""
        ...

    def state_for_spend(
        self, program_id: int, member_id: str, *, now: datetime, points: int
    ) -> MemberState | None:
        """`state(lock=True)` plus the open lots a spend of `points` draws on (`spend_lots`)."""
        ...

    def state_with_expiration(
        self, program_id: int, member_id: str, *, now: datetime
    ) -> MemberState | None:
        """`state(lock=False)` plus the soonest expiry (`next_expiration`), in one statement."""
        ...

    def states(
        self, program_id: int, member_ids: list[str], *, now: datetime, lock: bool = True
    ) -> dict[str, MemberState]:
        """The states of those of `member_ids` that exist, locked in one global order (unless
        `lock` is False: a check that changes nothing, in a read)."""
        ...

    def save_account(self, member_pk: int, account: Account) -> None: ...
    def save_accounts(self, accounts: dict[int, Account]) -> None: ...

    def save_profile(self, member_pk: int, profile: Profile) -> None:
        """The member's email, name and metadata become `profile`'s."""
        ...

    def erase(self, member_pk: int, *, now: datetime) -> None:
        """Empty the member's email, name and metadata; `erased_at` is `now` unless it was set."""
        ...


class EntryRows(Protocol):
    """The ledger rows. Only a pending award ever changes (it posts or is cancelled), and an
    award's or deduct's count of points reversed."""

    def insert(self, entry: Entry) -> None: ...
    def insert_many(self, entries: list[Entry]) -> None: ...
    def post_pending(
        self, entry_id: str, *, seq: int, balance_after: int, posted_at: datetime
    ) -> None: ...
    def cancel_pending(self, entry_id: str, *, at: datetime) -> None: ...

    def set_points_reversed(self, entry_id: str, points: int) -> None:
        """How many of an award's or deduct's points reversals have moved back so far."""
        ...

    def get(self, program_id: int, entry_id: str) -> Entry | None: ...
    def page(
        self, member: Member, query: HistoryQuery, *, offset: int, limit: int, newest_first: bool
    ) -> list[Entry]: ...
    def count(self, member: Member, query: HistoryQuery) -> int: ...
    def pending_awards(self, member_pk: int, *, due_by: datetime) -> list[Entry]: ...

    def erase_metadata(self, member_pk: int) -> int:
        """Empty the metadata of every entry of the member; return how many had some."""
        ...

    def export_page(
        self, program_id: int, query: HistoryQuery, *, after: str | None, limit: int
    ) -> list[Entry]:
        """Up to `limit` of the program's entries matching `query` whose id sorts after
        `after` (from the first if None), in id order: creation order, which a pending award
        keeps when it posts, so paging by id lists every row exactly once."""
        ...


class LotRows(Protocol):
    """What is left of each posted award or refund, and what each spend drew from which lot."""

    def insert(self, lot: Lot, *, member_pk: int) -> None: ...
    def insert_many(self, lots: list[tuple[Lot, int]]) -> None: ...

    def get(self, lot_id: str) -> Lot | None:
        """The lot (an award's has the award's id), open or not."""
        ...

    def debts(self, member_pk: int) -> list[Debt]:
        """What the member's reversals are still owed, oldest first (see `rules.reversals`)."""
        ...

    def open(self, member_pk: int) -> list[Lot]:
        """Every open lot of the member, in spend order."""
        ...

    def page_open(self, member_pk: int, *, offset: int, limit: int) -> list[Lot]:
        """A page of the member's open lots, in spend order (what the API lists)."""
        ...

    def count_open(self, member_pk: int) -> int: ...

    def due(self, member_pk: int, *, by: datetime) -> list[Lot]:
        """The open lots that expire by `by`, in spend order."""
        ...

    def covering(self, member_pk: int, points: int) -> list[Lot]:
        """The first open lots in spend order that hold `points` (all of them if they don't)."""
        ...

    def set_remaining(self, lot_id: str, remaining: int) -> None: ...
    def insert_draws(self, spend_id: str, draws: list[Draw]) -> None: ...


class CatalogRows(Protocol):
    """Rewards and the redemptions made of them."""

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
    def erase_redemption_metadata(self, member_pk: int) -> None:
        """Empty the metadata of every redemption of the member."""
        ...


class ReplyRows(Protocol):
    """Replies stored under Idempotency-Keys, in the same transaction as their effect."""

    def claim(self, program_id: int, key: str) -> bool:
        """False when another transaction is working under the same key right now."""
        ...

    def claim_many(self, program_id: int, keys: list[str]) -> bool:
        """`claim` of every key at once: False when another transaction holds any of them."""
        ...

    def get(self, program_id: int, key: str) -> StoredReply | None: ...
    def get_range(self, program_id: int, first: str, last: str) -> dict[str, StoredReply]:
        """The replies stored under keys from `first` to `last` (both included), by key: one
        index range, however many keys (an imported file's rows are keyed in line order)."""
        ...

    def put(self, program_id: int, key: str, reply: StoredReply, *, now: datetime) -> None: ...
    def put_many(
        self, program_id: int, replies: dict[str, StoredReply], *, now: datetime
    ) -> None: ...

    def purge(self, *, before: datetime, keep_prefix: str | None = None) -> int:
        """Drop replies stored before `before`, except those whose key starts with
        `keep_prefix` (the rows of imported files, kept for good); return how many."""
        ...

    def containing(self, program_id: int, text: bytes) -> dict[str, bytes]:
        """The bodies (by key) of the program's stored replies that contain `text`."""
        ...

    def rewrite(self, program_id: int, key: str, body: bytes) -> None:
        """The reply stored under `key` answers `body` from now on (its status stays)."""
        ...


class EventRows(Protocol):
    """The outbox: events written in the same transaction as the change they report.

    The feed lists a program's events in increasing `FeedPosition`, showing only those that can
    no longer be overtaken: once an event is listed, no event is ever inserted before it.
    """

    def append(self, events: list[Event]) -> None: ...

    def position(self, program_id: int, event_id: str) -> FeedPosition | None:
        """Where the event stands in its program's feed; None if there is no such event."""
        ...

    def after(
        self,
        program_id: int,
        position: FeedPosition | None,
        *,
        limit: int,
        types: list[str] | None = None,
    ) -> list[tuple[FeedPosition, Event]]:
        """Up to `limit` events after `position` (from the start if None), oldest first."""
        ...

    def head(self, program_id: int) -> FeedPosition | None:
        """The position of the newest event the feed shows today (None if it shows none)."""
        ...

    def purge(self, *, before: datetime) -> int:
        """Drop events created before `before`; return how many."""
        ...

    def containing(self, program_id: int, text: str) -> list[Event]:
        """The program's events whose body contains `text` (the feed's held-back ones too)."""
        ...

    def rewrite(self, event_id: str, body: str) -> None:
        """The event reads `body` from now on; its place in the feed stays."""
        ...


@dataclass(frozen=True, slots=True)
class ClaimedAttempt:
    """A delivery claimed for one attempt: `attempts` counts this one; `body` is the event's
    JSON (None once the event itself has been purged)."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    attempts: int
    requeued_at_attempt: int
    body: str | None


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What became of attempt number `attempts` of a delivery; recorded only if no later
    attempt has been claimed since (its lease had run out)."""

    delivery_id: str
    attempts: int
    status: DeliveryStatus
    next_attempt_at: datetime | None
    status_code: int | None
    error: str | None


class WebhookRows(Protocol):
    """Webhook endpoints, and their deliveries with what each attempt came to.

    Deliveries are made from the events feed (`EventRows.after`) from each endpoint's cursor.
    An attempt is claimed in a transaction of its own by leasing the delivery (`claim`), made
    outside any transaction, and recorded in another (`record`): several dispatchers, on one
    database, never attempt one delivery at once while its lease runs.
    """

    def insert_endpoint(self, endpoint: WebhookEndpoint) -> None: ...
    def get_endpoint(
        self, program_id: int, endpoint_id: str, *, lock: bool = False
    ) -> WebhookEndpoint | None: ...
    def list_endpoints(
        self, program_id: int, *, offset: int, limit: int
    ) -> list[WebhookEndpoint]: ...
    def count_endpoints(self, program_id: int) -> int: ...
    def update_endpoint(self, endpoint: WebhookEndpoint) -> None: ...
    def delete_endpoint(self, endpoint_id: str) -> None:
        """The endpoint and its deliveries."""
        ...

    def get_delivery(self, endpoint_id: str, delivery_id: str) -> Delivery | None: ...
    def list_deliveries(
        self, endpoint_id: str, status: DeliveryStatus | None, *, offset: int, limit: int
    ) -> list[Delivery]:
        """Newest first."""
        ...

    def count_deliveries(self, endpoint_id: str, status: DeliveryStatus | None) -> int: ...

    def requeue(
        self,
        endpoint_id: str,
        *,
        delivery_id: str | None,
        failed_since: datetime | None,
        now: datetime,
    ) -> int:
        """Make deliveries pending again, due at `now`, their schedule restarting: the one
        named (whatever its status), or every failed one created since `failed_since`."""
        ...

    # The dispatcher's.

    def endpoint_by_id(self, endpoint_id: str) -> WebhookEndpoint | None:
        """Any program's endpoint (the dispatcher works for every program)."""
        ...

    def lagging_endpoints(self, *, limit: int, backlog: int) -> list[str]:
        """Endpoints whose cursor is behind their program's feed, leaving out enabled ones that
        already have `backlog` deliveries pending (they catch up first)."""
        ...

    def lock_for_fan_out(self, endpoint_id: str) -> WebhookEndpoint | None:
        """The endpoint, locked; None if it is gone or another transaction holds it (that one
        is fanning it out: wait for nothing)."""
        ...

    def set_cursor(self, endpoint_id: str, cursor: FeedPosition) -> None: ...

    def insert_deliveries(self, deliveries: list[Delivery]) -> None:
        """New deliveries; one an endpoint already has for an event is skipped."""
        ...

    def due_endpoints(self, *, now: datetime, limit: int) -> list[str]:
        """Enabled endpoints with a pending delivery due by `now` and not leased."""
        ...

    def claim(
        self, endpoint_id: str, *, now: datetime, lease_until: datetime, limit: int
    ) -> list[ClaimedAttempt]:
        """Lease up to `limit` of the endpoint's due deliveries, skipping any another
        transaction is claiming, and count the attempt."""
        ...

    def record(self, outcomes: list[AttemptOutcome], *, now: datetime) -> None: ...

    def oldest_pending(self) -> datetime | None:
        """When the oldest pending delivery was made, over every endpoint."""
        ...

    def purge(self, *, before: datetime) -> int:
        """Drop succeeded and failed deliveries last changed before `before`; return how many."""
        ...


@dataclass(frozen=True, slots=True)
class PastRows:
    """What a member's balance at a past moment is made of: the counters of the latest
    checkpoint at or before it (zeros if none), the posted entries after that checkpoint which
    had taken effect by then, as (type, points) in ledger order, and what was pending then."""

    checkpoint: Account
    entries: list[tuple[str, int]]
    last_seq: int  # the ledger position of the last entry that had taken effect
    pending: int


class ReportRows(Protocol):
    """Balances in the past and the program report: their running totals and the reads.

    A checkpoint holds a member's counters after the entry at a ledger position; a balance as
    of a moment is read from the latest checkpoint at or before it plus the entries after it.
    """

    def checkpoint(self, member_pk: int, *, seq: int, at: datetime, account: Account) -> None: ...

    def past(self, member_pk: int, *, at: datetime) -> PastRows: ...

    def past_expiration(
        self, member_pk: int, *, at: datetime, last_seq: int
    ) -> tuple[int, datetime] | None:
        """The soonest expiry of the lots the member held at `at` (points, when), or None."""
        ...

    # The program report.

    def rolled_up_until(self, program_id: int) -> datetime | None:
        """The end of the days already in the program's running totals (None: none are)."""
        ...

    def roll_up(self, program_id: int, *, start: datetime | None, end: datetime) -> None:
        """Add the days from `start` (from the first entry if None) to `end` to the running
        totals: the points of the posted entries of each type that took effect on each day."""
        ...

    def due_since(self) -> datetime | None:
        """The soonest moment anything (a pending award, a lot's expiry) falls due, over every
        program; None if nothing ever will."""
        ...

    def day_totals(
        self, program_id: int, *, start: datetime, end: datetime, rolled_until: datetime | None
    ) -> list[tuple[datetime, str, int]]:
        """(UTC day, type, points) of the posted entries that took effect from `start` to `end`
        (days, exclusive end): from the running totals before `rolled_until`, from the entries
        after it."""
        ...

    def active_members(self, program_id: int, *, start: datetime, end: datetime) -> int:
        """How many members had a posted entry take effect from `start` to before `end`."""
        ...

    def outstanding(self, program_id: int) -> tuple[int, int, int]:
        """(the sum of balances, of pending points, the number of members) of the program."""
        ...

    def expiring(self, program_id: int, *, before: list[datetime]) -> list[int]:
        """For each moment of `before`, the points of open lots that expire before it."""
        ...


# Administration.


class ProgramRows(Protocol):
    """Programs (tenants) and their settings."""

    def ensure(self, name: str, *, now: datetime) -> Program: ...
    def get(self, program_id: int) -> Program: ...
    def count(self) -> int: ...
    def names(self) -> list[str]: ...
    def find(self, name: str) -> Program | None: ...
    def set_expiry_policy(self, program_id: int, days: int | None) -> None: ...
    def set_enrol_on_award(self, program_id: int, enabled: bool) -> None: ...

    def enrols_on_award(self, program_id: int) -> bool:
        """Whether an award to an unknown member id enrols it (one statement)."""
        ...


class KeyRows(Protocol):
    """API keys, found by the hash of their secret (the secret itself is never stored)."""

    def insert(
        self,
        *,
        key_id: str,
        program_id: int,
        scope: str,
        secret_hash: str,
        prefix: str,
        now: datetime,
    ) -> None: ...
    def find(self, secret_hash: str) -> KeyRecord | None: ...
    def all(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str, *, now: datetime) -> bool: ...


# Audit.


class AuditQueries(Protocol):
    """Reads across every member: for `tally verify` and for the sweep."""

    def rollup_differences(self) -> list[tuple[int, datetime, str, int, int]]:
        """(program, day, type, points in the running totals, points the entries add up to)
        for every rolled-up day where the two differ."""
        ...

    def ledger_checks(self) -> Iterator[LedgerCheck]:
        """Every member's figures, one member at a time, each read once for all members (a
        fixed number of passes over the tables, not a number per member)."""
        ...

    def unbalanced_spends(self) -> list[tuple[str, int, int]]:
        """(entry or lot id, points it should account for, points its draws or lots account
        for) that differ."""
        ...

    def unbalanced_reversals(self) -> list[tuple[str, int, int]]:
        """(award or deduct id, its `points_reversed`, what its reversals add up to) that
        differ, or that exceed the points it moved."""
        ...

    def stray_reversals(self) -> list[str]:
        """Reversals that reverse no posted award or deduct of their own member (or with the
        wrong sign), and rows that name a reversed row without being a reversal."""
        ...

    def members_with_due_work(self, *, now: datetime, limit: int) -> list[tuple[int, str]]: ...


class Tx(Protocol):
    """One open transaction: every role's operations, all in it."""

    @property
    def members(self) -> MemberRows: ...
    @property
    def entries(self) -> EntryRows: ...
    @property
    def lots(self) -> LotRows: ...
    @property
    def catalog(self) -> CatalogRows: ...
    @property
    def replies(self) -> ReplyRows: ...
    @property
    def events(self) -> EventRows: ...
    @property
    def webhooks(self) -> WebhookRows: ...
    @property
    def programs(self) -> ProgramRows: ...
    @property
    def keys(self) -> KeyRows: ...
    @property
    def audit(self) -> AuditQueries: ...
    @property
    def reports(self) -> ReportRows: ...


class Store(Protocol):
    """A database Tally can run on."""

    # Whether a long unit of work (a 10,000-item bulk award) should run on a worker thread, in a
    # transaction of its own (`transact`), rather than the way `write` runs it: SQLite's group
    # commit runs work on the event loop, where a long one holds up every other request;
    # PostgreSQL's work gives the loop back at every round trip, and its blocking driver in a
    # thread was measured three times slower for a bulk (bench/README.md).
    long_work_in_thread: bool

    def transact(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in one transaction on the calling thread and commit it."""
        ...

    async def write(self, work: Callable[[Tx], T], *, lane: Hashable | None = None) -> T:
        """Run `work` atomically, possibly in a group commit; return after it is durable.

        `lane`: what the work locks, when that is one thing (a member): the store may then
        commit it together with other work on the same lane. Raises `Conflict` when the
        database aborted it to break a lock conflict."""
        ...

    async def read(self, work: Callable[[Tx], T]) -> T:
        """Run `work` on a consistent snapshot; it must not write."""
        ...

    async def lookup(self, work: Callable[[Tx], T]) -> T:
        """Run `work`, which issues exactly one statement (a second one raises).

        One statement sees a consistent snapshot by itself, so the store may skip opening a
        transaction: one round trip instead of three on PostgreSQL. (A read of the events feed
        on PostgreSQL first looks at what other databases run, which reads no table and is not
        counted: `tally.storage.sql.session.Session.feed_horizon`.)"""
        ...

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; return the ids of those applied."""
        ...

    async def aclose(self) -> None:
        """Release what the store holds for the running event loop; await it before that loop
        ends (the server's lifespan does; elsewhere use `tally.maintenance.run_async`)."""
        ...

    def close(self) -> None: ...
