"""The ledger's values: immutable, standard library only, time always passed in.

A member's points live in *lots*: every posted award (and every refund) is a lot with a remaining
amount and an optional expiry. What a change does to these values is decided in `tally.rules`;
how they are stored, in `tally.storage`. The only behaviour here is `Account`'s arithmetic on
its own counters and the order lots are spent in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


class EntryType(enum.StrEnum):
    """The kinds of ledger entry; the sign of `points` follows the kind."""

    AWARD = "award"
    DEDUCT = "deduct"
    REDEEM = "redeem"
    REFUND = "refund"
    EXPIRE = "expire"
    TRANSFER_IN = "transfer_in"
    TRANSFER_OUT = "transfer_out"
    REVERSAL = "reversal"  # takes back an award (negative) or gives back a deduct (positive)


class EntryStatus(enum.StrEnum):
    """Only awards are ever `pending` or `cancelled`; every other entry is born `posted`."""

    PENDING = "pending"
    POSTED = "posted"
    CANCELLED = "cancelled"


class Scope(enum.StrEnum):
    """`read` may call GET routes only; `write` may call everything."""

    READ = "read"
    WRITE = "write"


class RedemptionStatus(enum.StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"


MAX_POINTS = 1_000_000_000
MAX_BALANCE = 2**63 - 1

# Who made a ledger row that no key asked for: an expiry (`Entry.created_by`).
SYSTEM = "system"
# The maker of rows written by the command line on the operator's behalf (`tally import awards`).
COMMAND_LINE = "cli"


@dataclass(frozen=True, slots=True)
class Account:
    """A member's counters. Invariant: balance == earned + transferred_in - redeemed - deducted
    - expired - transferred_out. The balance is below zero only after a reversal took back
    points already spent (`reverse`): that is a debt, which only credits may reduce."""

    balance: int = 0
    pending: int = 0
    lifetime_earned: int = 0
    lifetime_redeemed: int = 0
    lifetime_deducted: int = 0
    lifetime_expired: int = 0
    last_seq: int = 0
    entry_count: int = 0
    lifetime_transferred_in: int = 0
    lifetime_transferred_out: int = 0

    # The methods below build the new value field by field: this is the hottest code of every
    # write, and `dataclasses.replace` costs several times as much.

    def post(self, kind: EntryType, points: int) -> Account:
        """The account after an entry of `kind` and signed `points` takes effect."""
        balance = self.balance + points
        if balance < 0 and points < 0 and kind is not EntryType.REVERSAL:  # only a debt may
            raise ValueError(f"balance would fall to {balance}")
        earned, redeemed = self.lifetime_earned, self.lifetime_redeemed
        deducted, expired = self.lifetime_deducted, self.lifetime_expired
        transferred_in = self.lifetime_transferred_in
        transferred_out = self.lifetime_transferred_out
        if kind is EntryType.AWARD:
            earned += points
        elif kind is EntryType.TRANSFER_IN:
            transferred_in += points
        elif kind is EntryType.TRANSFER_OUT:
            transferred_out -= points
        elif kind is EntryType.DEDUCT:
            deducted -= points
        elif kind is EntryType.EXPIRE:
            expired -= points
        elif kind is EntryType.REVERSAL:  # of an award (negative) or of a deduct (positive)
            if points < 0:
                earned += points
            else:
                deducted -= points
        else:  # a redemption counts in lifetime_redeemed; its refund takes it back out
            redeemed -= points
        return Account(
            balance,
            self.pending,
            earned,
            redeemed,
            deducted,
            expired,
            self.last_seq + 1,
            self.entry_count,
            transferred_in,
            transferred_out,
        )

    def reverse(self, of: EntryType, points: int) -> Account:
        """The account after a reversal of signed `points` of an entry of kind `of`: an award's
        (negative, lowering `lifetime_earned`; the balance may fall below zero) or a deduct's
        (positive, lowering `lifetime_deducted`)."""
        earned, deducted = self.lifetime_earned, self.lifetime_deducted
        if of is EntryType.AWARD:
            earned += points
        elif of is EntryType.DEDUCT:
            deducted -= points
        else:
            raise ValueError(f"a {of.value} cannot be reversed")
        return Account(
            self.balance + points,
            self.pending,
            earned,
            self.lifetime_redeemed,
            deducted,
            self.lifetime_expired,
            self.last_seq + 1,
            self.entry_count,
            self.lifetime_transferred_in,
            self.lifetime_transferred_out,
        )

    def hold(self, points: int) -> Account:
        """The account after a pending award of `points` is recorded (or, negative, released)."""
        return Account(
            self.balance,
            self.pending + points,
            self.lifetime_earned,
            self.lifetime_redeemed,
            self.lifetime_deducted,
            self.lifetime_expired,
            self.last_seq,
            self.entry_count,
            self.lifetime_transferred_in,
            self.lifetime_transferred_out,
        )

    def numbered(self) -> Account:
        """The account after an entry that does not touch the balance takes a ledger position."""
        return Account(
            self.balance,
            self.pending,
            self.lifetime_earned,
            self.lifetime_redeemed,
            self.lifetime_deducted,
            self.lifetime_expired,
            self.last_seq + 1,
            self.entry_count,
            self.lifetime_transferred_in,
            self.lifetime_transferred_out,
        )

    def counted(self, entries: int = 1) -> Account:
        return Account(
            self.balance,
            self.pending,
            self.lifetime_earned,
            self.lifetime_redeemed,
            self.lifetime_deducted,
            self.lifetime_expired,
            self.last_seq,
            self.entry_count + entries,
            self.lifetime_transferred_in,
            self.lifetime_transferred_out,
        )


@dataclass(frozen=True, slots=True)
class Lot:
    """Points from one posted award or refund that are still there to spend or expire."""

    entry_id: str  # the lot's id: its award's or refund's entry id, or a `lot_…` of a transfer
    remaining: int
    expires_at: datetime | None
    seq: int
    # The entry that made the lot when that is not `entry_id`: a transfer's `transfer_in`.
    source: str | None = None

    @property
    def made_by(self) -> str:
        """The ledger entry that brought these points to the member."""
        return self.source or self.entry_id

    @property
    def spend_order(self) -> tuple[bool, datetime, int]:
        """Soonest expiry first, never-expiring last, oldest (lowest ledger position) first."""
        never = self.expires_at is None
        return (never, self.expires_at or datetime.min.replace(tzinfo=UTC), self.seq)


@dataclass(frozen=True, slots=True)
class Draw:
    """`points` taken from the lot of entry `lot_id` by one spend or expiry."""

    lot_id: str
    points: int


@dataclass(frozen=True, slots=True)
class Debt:
    """Points a reversal took beyond what the member held: owed until later lots pay them."""

    reversal_id: str
    owed: int


@dataclass(frozen=True, slots=True)
class Program:
    id: int
    name: str
    points_expire_after_days: int | None
    created_at: datetime
    # An award, bulk item or transfer to a member id the program does not have enrols it.
    enrol_on_award: bool = False


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: only the hash of its secret is kept."""

    id: str
    program_id: int
    program_name: str
    scope: Scope
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Profile:
    """What a client says about a member; `metadata` is the JSON text exactly as stored."""

    member_id: str
    email: str | None = None
    name: str | None = None
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    pk: int
    program_id: int
    profile: Profile
    account: Account
    created_at: datetime
    # When the member's personal data was erased (its profile is then empty for good).
    erased_at: datetime | None = None

    @property
    def member_id(self) -> str:
        return self.profile.member_id


@dataclass(frozen=True, slots=True)
class Entry:
    """One immutable ledger row; only a pending award later changes status (and position)."""

    id: str
    program_id: int
    member_pk: int
    member_id: str
    seq: int
    type: EntryType
    status: EntryStatus
    points: int
    reason: str
    reference: str | None
    metadata: str | None
    balance_after: int | None
    created_at: datetime
    available_at: datetime | None
    expires_at: datetime | None
    posted_at: datetime | None
    # The public id of the API key whose request made the row (`key_…`), or `SYSTEM` for a row
    # time made (an expiry). A pending award that matures keeps its maker: posting makes no row.
    created_by: str
    reverses: str | None = None  # a reversal's: the award or deduct it reverses
    points_reversed: int = 0  # an award's or deduct's: how many of its points were reversed

    @property
    def effective_at(self) -> datetime:
        """When the entry took effect on the balance (or, without effect, when it was made)."""
        return self.posted_at or self.created_at


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Filters of a member's history; `start` and `end` are both inclusive."""

    type: EntryType | None = None
    start: datetime | None = None
    end: datetime | None = None

    @property
    def filtered(self) -> bool:
        return self.type is not None or self.start is not None or self.end is not None


@dataclass(frozen=True, slots=True)
class Page:
    number: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


@dataclass(frozen=True, slots=True)
class Reward:
    id: str
    program_id: int
    name: str
    points_cost: int
    stock: int | None
    active: bool
    metadata: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Redemption:
    id: str
    program_id: int
    member_pk: int
    member_id: str
    reward_id: str
    quantity: int
    points: int
    status: RedemptionStatus
    transaction_id: str
    refund_transaction_id: str | None
    created_at: datetime
    cancelled_at: datetime | None


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened, as integrations see it: `body` is the event's JSON, exactly as
    the feed returns it and a webhook delivers it (`{event_id, type, timestamp, data}`)."""

    id: str
    program_id: int
    type: str
    created_at: datetime
    body: str


# Where an event stands in its program's feed: the feed lists events in increasing position.
FeedPosition = tuple[int, int]


# Webhooks (api.md section 8).


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where a program's events are sent, and the secrets that sign them.

    `cursor` is the feed position the endpoint's deliveries have been made up to: events after
    it are still to be turned into deliveries (`FeedPosition`; (-1, -1) is before the first).
    `previous_secret` still signs, beside `secret`, until `previous_secret_expires_at`.
    """

    id: str
    program_id: int
    url: str
    events: tuple[str, ...]
    description: str | None
    enabled: bool
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    cursor: FeedPosition
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one endpoint, and what its attempts so far came to."""

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: DeliveryStatus
    attempts: int
    requeued_at_attempt: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
