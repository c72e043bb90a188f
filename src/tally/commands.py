"""The service's vocabulary: validated commands in, named results out (no behaviour here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Generic, TypeVar

from tally.domain import (
    Account,
    Entry,
    Event,
    Page,
    Redemption,
    Scope,
)
from tally.errors import (
    TallyError,
)

V = TypeVar("V")
Clock = Callable[[], datetime]


# Commands: validated requests, in the domain's own terms.


@dataclass(frozen=True, slots=True)
class AwardCommand:
    member_id: str
    points: int
    reason: str
    reference: str | None = None
    metadata: str | None = None
    available_at: datetime | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeductCommand:
    member_id: str
    points: int
    reason: str
    reference: str | None = None
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class TransferCommand:
    from_member_id: str
    to_member_id: str
    points: int
    reason: str
    reference: str | None = None
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class ReverseCommand:
    """Reverse `points` of a transaction (None: all of it not yet reversed)."""

    reason: str
    points: int | None = None
    allow_negative: bool = False
    reference: str | None = None
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class BulkItemError:
    """A bulk item that failed validation, with the member it named (if it named one)."""

    member_id: str | None
    error: TallyError


@dataclass(frozen=True, slots=True)
class BulkCommand:
    """Awards in request order; an item that failed validation is carried as its error."""

    items: list[AwardCommand | BulkItemError]
    atomic: bool = False


@dataclass(frozen=True, slots=True)
class KeyedAward:
    """One row of an awards file: its line, its Idempotency-Key (derived from the file and the
    line, so the same file run again replays the row instead of awarding it twice) and the
    award."""

    line: int
    key: str
    award: AwardCommand


@dataclass(frozen=True, slots=True)
class RowError:
    """A row of an awards file that could not be read, with the member it named (if any)."""

    line: int
    member_id: str | None
    error: TallyError


@dataclass(frozen=True, slots=True)
class ImportCommand:
    """An awards file's rows in line order; a row that could not be read is its error."""

    rows: list[KeyedAward | RowError]


@dataclass(frozen=True, slots=True)
class RedeemCommand:
    member_id: str
    reward_id: str
    quantity: int = 1
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class RewardDraft:
    name: str
    points_cost: int
    stock: int | None = None
    active: bool = True
    metadata: str | None = None


@dataclass(frozen=True, slots=True)
class RewardChanges:
    """Only the fields a PATCH named; `stock_set` tells a null stock from an absent one."""

    name: str | None = None
    points_cost: int | None = None
    stock: int | None = None
    stock_set: bool = False
    active: bool | None = None
    metadata: str | None = None
    metadata_set: bool = False


@dataclass(frozen=True, slots=True)
class MemberChanges:
    """Only the profile fields a PATCH named; each `_set` tells a null from an absent field."""

    email: str | None = None
    email_set: bool = False
    name: str | None = None
    name_set: bool = False
    metadata: str | None = None
    metadata_set: bool = False


@dataclass(frozen=True, slots=True)
class ProgramChanges:
    """Only the settings a PATCH named; `expiry_set` tells a null policy from an absent one."""

    points_expire_after_days: int | None = None
    expiry_set: bool = False
    enrol_on_award: bool | None = None


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An Idempotency-Key and the fingerprint of the request that carried it."""

    key: str
    fingerprint: str


# Results.


@dataclass(frozen=True, slots=True)
class Reply:
    """What a change answered: replayed when it came from an earlier request's stored reply."""

    status: int
    body: bytes
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Posting:
    """An entry just written and the member's account right after it."""

    entry: Entry
    account: Account

    @property
    def balance(self) -> int:
        return self.account.balance


@dataclass(frozen=True, slots=True)
class BulkFailure:
    index: int
    member_id: str | None
    error: TallyError


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    postings: list[tuple[int, Posting]]
    failures: list[BulkFailure]


class RowStatus(StrEnum):
    OK = "ok"  # awarded now
    REPLAYED = "replayed"  # awarded by an earlier run of the same file; not again
    ERROR = "error"  # this row is bad: nothing of the file was applied
    SKIPPED = "skipped"  # a good row, not applied because other rows are bad


@dataclass(frozen=True, slots=True)
class RowResult:
    line: int
    member_id: str | None
    status: RowStatus
    transaction_id: str | None = None
    error: TallyError | None = None


@dataclass(frozen=True, slots=True)
class ImportOutcome:
    """Every row's result in line order. A row in error refused the file: then nothing was
    applied (the others are `skipped`), unless a row went bad after the check, while the rows
    before its batch were being applied (those stay `ok`)."""

    results: list[RowResult]

    @property
    def refused(self) -> bool:
        return any(r.status is RowStatus.ERROR for r in self.results)

    def count(self, status: RowStatus) -> int:
        return sum(1 for r in self.results if r.status is status)


@dataclass(frozen=True, slots=True)
class BalanceView:
    member_id: str
    account: Account
    next_expiration: tuple[int, datetime] | None


@dataclass(frozen=True, slots=True)
class Listing(Generic[V]):
    items: list[V]
    total: int
    page: Page


@dataclass(frozen=True, slots=True)
class RedemptionResult:
    redemption: Redemption
    entry: Entry


@dataclass(frozen=True, slots=True)
class FeedQuery:
    """A page of the event feed: after the event `after` (from the start if None), at most
    `limit` events, of the `types` given (every type if None)."""

    after: str | None
    limit: int
    types: list[str] | None


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: list[Event]
    has_more: bool
    next_after: str | None  # where the next poll starts: the last event listed, or `after`


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key_id: str
    program: str
    scope: Scope
    secret: str
    new_program: bool = False  # the program was created for this key
    other_programs: tuple[str, ...] = ()  # the programs that existed before, by name


@dataclass(frozen=True, slots=True)
class SweepReport:
    members: int = 0
    purged_replies: int = 0
    purged_events: int = 0
    purged_deliveries: int = 0


# Webhooks


@dataclass(frozen=True, slots=True)
class EndpointDraft:
    url: str
    events: list[str]
    description: str | None


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    """Only the fields a PATCH named; `description_set` tells a null description from none."""

    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    description_set: bool = False
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Requeued:
    """How many deliveries a retry or a recovery queued again."""

    queued: int


# The program report


@dataclass(frozen=True, slots=True)
class ReportPeriod:
    """One period's figures (`rules.reports.FIGURES`), each the signed points of its rows."""

    start: date
    figures: dict[str, int]


@dataclass(frozen=True, slots=True)
class ProgramReport:
    first: date
    last: date
    interval: str
    balance: int
    pending: int
    expiring: list[tuple[datetime, int]]
    members: int
    active_members: int
    periods: list[ReportPeriod]
