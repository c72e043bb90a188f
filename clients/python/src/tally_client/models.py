"""What the API answers, as typed, immutable values with the API's field names.

Decoding ignores fields this client does not know (a newer server's), and fields that arrived
after the first version of the API have defaults, so this client keeps working across versions.
`metadata` and an event's `data` are the JSON objects as stored. Times are timezone-aware.
Each is immutable (`frozen`), made with keywords.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from msgspec import Struct, field

JsonObject = dict[str, Any]


class Member(Struct, frozen=True, kw_only=True):
    member_id: str
    email: str | None = None
    name: str | None = None
    metadata: JsonObject | None = None
    created_at: datetime
    erased_at: datetime | None = None


class NextExpiration(Struct, frozen=True, kw_only=True):
    points: int
    expires_at: datetime


class Lot(Struct, frozen=True, kw_only=True):
    """What is left of one award, refund or transfer received, and when it expires."""

    lot_id: str
    transaction_id: str
    remaining: int
    expires_at: datetime | None = None


class Key(Struct, frozen=True, kw_only=True):
    """An API key as the server shows it to its holder: never the secret itself."""

    key_id: str
    scope: str
    program: str


class Balance(Struct, frozen=True, kw_only=True):
    """`balance == lifetime_earned + lifetime_transferred_in - lifetime_redeemed -
    lifetime_deducted - lifetime_expired - lifetime_transferred_out`."""

    member_id: str
    balance: int
    lifetime_earned: int
    lifetime_redeemed: int
    pending: int
    lifetime_deducted: int
    lifetime_expired: int
    lifetime_transferred_in: int = 0
    lifetime_transferred_out: int = 0
    next_expiration: NextExpiration | None = None


class Transaction(Struct, frozen=True, kw_only=True):
    """A ledger row, as history and `get_transaction` show it; `points` is signed."""

    transaction_id: str
    member_id: str
    type: str
    status: str
    points: int
    reason: str
    reference: str | None = None
    metadata: JsonObject | None = None
    balance_after: int | None = None
    created_at: datetime
    posted_at: datetime | None = None
    available_at: datetime | None = None
    expires_at: datetime | None = None
    created_by: str | None = None
    # A reversal's: the award or deduct it reverses. An award's or deduct's: how many of its
    # points reversals have taken or given back so far.
    reverses: str | None = None
    points_reversed: int = 0


class NewTransaction(Struct, frozen=True, kw_only=True):
    """What an award or a deduct answers: the new row and the member's balance after it."""

    transaction_id: str
    member_id: str
    type: str
    status: str
    points: int
    reason: str
    reference: str | None = None
    metadata: JsonObject | None = None
    new_balance: int
    available_at: datetime | None = None
    expires_at: datetime | None = None
    created_at: datetime


class Transfer(Struct, frozen=True, kw_only=True):
    """Both rows of a transfer. `from_` is the API's `from` (a Python keyword)."""

    transfer_id: str
    from_: Transaction = field(name="from")
    to: Transaction


class AwardItem(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One award of a `bulk_award`: the fields of `award`."""

    member_id: str
    points: int
    reason: str
    reference: str | None = None
    metadata: JsonObject | None = None
    available_at: datetime | None = None
    expires_at: datetime | None = None


class BulkPosting(Struct, frozen=True, kw_only=True):
    index: int
    member_id: str
    transaction_id: str
    new_balance: int


class ErrorBody(Struct, frozen=True, kw_only=True):
    code: str
    message: str
    details: list[JsonObject] = []


class BulkFailure(Struct, frozen=True, kw_only=True):
    index: int
    member_id: str | None = None
    error: ErrorBody


class BulkResult(Struct, frozen=True, kw_only=True):
    processed: int
    failed: int
    transactions: list[BulkPosting]
    errors: list[BulkFailure]


class Program(Struct, frozen=True, kw_only=True):
    name: str
    points_expire_after_days: int | None = None
    enrol_on_award: bool = False
    created_at: datetime


class Reward(Struct, frozen=True, kw_only=True):
    reward_id: str
    name: str
    points_cost: int
    stock: int | None = None
    active: bool
    metadata: JsonObject | None = None
    created_at: datetime


class Redemption(Struct, frozen=True, kw_only=True):
    redemption_id: str
    member_id: str
    reward_id: str
    quantity: int
    points: int
    status: str
    transaction_id: str
    refund_transaction_id: str | None = None
    created_at: datetime
    cancelled_at: datetime | None = None


class Event(Struct, frozen=True, kw_only=True):
    """`data` is the object exactly as the API returned it when the event was written."""

    event_id: str
    type: str
    timestamp: datetime
    data: JsonObject


class WebhookEndpoint(Struct, frozen=True, kw_only=True):
    endpoint_id: str
    url: str
    events: list[str]
    description: str | None = None
    enabled: bool
    created_at: datetime
    updated_at: datetime | None = None


class WebhookEndpointWithSecret(Struct, frozen=True, kw_only=True):
    """An endpoint as created or rotated: the only answers that show its `secret`."""

    endpoint_id: str
    url: str
    events: list[str]
    description: str | None = None
    enabled: bool
    secret: str
    created_at: datetime
    updated_at: datetime | None = None


class DeletedWebhookEndpoint(Struct, frozen=True, kw_only=True):
    endpoint_id: str
    deleted: bool


class Delivery(Struct, frozen=True, kw_only=True):
    delivery_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime
    updated_at: datetime | None = None


class ImportRowError(Struct, frozen=True, kw_only=True):
    """Why a row of an awards file was refused."""

    code: str
    message: str


class ImportRow(Struct, frozen=True, kw_only=True):
    """One row of an awards file: `ok` (awarded now), `replayed` (by an earlier import),
    `error` or `skipped`."""

    line: int
    member_id: str | None
    status: str
    transaction_id: str | None = None
    error: ImportRowError | None = None


class ImportResult(Struct, frozen=True, kw_only=True):
    """An imported awards file: how many rows, how many awarded now and before, each row."""

    rows: int
    awarded: int
    replayed: int
    results: list[ImportRow]


class Recovered(Struct, frozen=True, kw_only=True):
    """How many failed deliveries were queued again."""

    queued: int


class Outstanding(Struct, frozen=True, kw_only=True):
    balance: int
    pending: int


class Expiring(Struct, frozen=True, kw_only=True):
    """Points that expire before `before` (30, 60 and 90 days from now)."""

    before: datetime
    points: int


class MemberCounts(Struct, frozen=True, kw_only=True):
    total: int
    active_in_period: int


class Period(Struct, frozen=True, kw_only=True):
    """One interval of a report (a UTC day, a week from Monday, a month), starting at `start`;
    each figure is the sum of that type's rows, signed as in history."""

    start: date
    awarded: int = 0
    deducted: int = 0
    redeemed: int = 0
    refunded: int = 0
    expired: int = 0
    transferred: int = 0
    reversed: int = 0


class Report(Struct, frozen=True, kw_only=True):
    """The points liability, computed from the ledger, over the days `from_` to `to`."""

    from_: date = field(name="from")
    to: date
    interval: str
    outstanding: Outstanding
    expiring: list[Expiring]
    members: MemberCounts
    periods: list[Period]


class Health(Struct, frozen=True, kw_only=True):
    status: str


class PageMeta(Struct, frozen=True, kw_only=True):
    page: int
    per_page: int
    total: int
    total_pages: int


class FeedMeta(Struct, frozen=True, kw_only=True):
    limit: int
    has_more: bool
    next_after: str | None = None
