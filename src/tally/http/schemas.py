"""Request and response bodies. Requests reject unknown fields; validation happens in msgspec.

Response structs mirror `../shared/spec/api.md`; `metadata` travels as the JSON text it was
stored as (`msgspec.Raw`), so it is returned byte for byte and never re-encoded. The checks
msgspec cannot express are in `inputs.py`; domain values become these structs in `outputs.py`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType

from tally.domain import MAX_POINTS

# The objects' own structs are shared with the outbox's events (`tally.views`).
from tally.views import MemberOut as MemberOut
from tally.views import RedemptionOut as RedemptionOut
from tally.views import RewardOut as RewardOut
from tally.views import StoredJson as StoredJson
from tally.views import TransactionOut as TransactionOut
from tally.views import raw as raw

MemberId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9_\-.:@]{1,64}$",
        description="1 to 64 characters of A-Z a-z 0-9 _ - . : @",
        examples=["mem_abc123"],
    ),
]
Points = Annotated[int, Meta(ge=1, le=MAX_POINTS, description="A whole number of points.")]
Reason = Annotated[str, Meta(min_length=1, max_length=500)]
Reference = Annotated[str, Meta(max_length=200)]
Timestamp = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a zone.")]
Metadata = Annotated[
    dict[str, Any], Meta(description="Any JSON object up to 16 KiB, returned unchanged.")
]


class _In(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: a field the API does not know is an error, not ignored."""


class AwardIn(_In):
    member_id: MemberId
    points: Points
    reason: Reason
    reference: Reference | None = None
    metadata: Metadata | None = None
    available_at: Timestamp | None = None
    expires_at: Timestamp | None = None


class BulkAwardIn(_In):
    awards: Annotated[list[Raw], Meta(min_length=1, max_length=10_000)]
    atomic: bool = False


class BulkAwardSchema(_In):
    """What `BulkAwardIn` accepts, for the API document (items are validated one by one)."""

    awards: Annotated[list[AwardIn], Meta(min_length=1, max_length=10_000)]
    atomic: bool = False


class DeductIn(_In):
    member_id: MemberId
    points: Points
    reason: Reason
    reference: Reference | None = None
    metadata: Metadata | None = None


class TransferIn(_In):
    from_member_id: MemberId
    to_member_id: MemberId
    points: Points
    reason: Reason
    reference: Reference | None = None
    metadata: Metadata | None = None


Email = Annotated[str, Meta(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Name = Annotated[str, Meta(min_length=1, max_length=200)]


class ReverseIn(_In):
    reason: Reason
    points: Points | None = None
    allow_negative: bool = False
    reference: Reference | None = None
    metadata: Metadata | None = None


class MemberIn(_In):
    member_id: MemberId | None = None
    email: Email | None = None
    name: Name | None = None
    metadata: Metadata | None = None


class MemberPatch(_In):
    """The profile fields to change, each as `MemberIn` takes it, or null to clear it."""

    email: Email | None | UnsetType = UNSET
    name: Name | None | UnsetType = UNSET
    metadata: Metadata | None | UnsetType = UNSET


class CancelIn(_In):
    """A cancel (or an erasure) takes no fields: an empty body or `{}`."""


class ProgramPatch(_In):
    points_expire_after_days: Annotated[int, Meta(ge=1, le=36_500)] | None | UnsetType = UNSET
    enrol_on_award: bool | UnsetType = UNSET


class RewardIn(_In):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    points_cost: Points
    stock: Annotated[int, Meta(ge=0, le=MAX_POINTS)] | None = None
    active: bool = True
    metadata: Metadata | None = None


class RewardPatch(_In):
    name: Annotated[str, Meta(min_length=1, max_length=200)] | UnsetType = UNSET
    points_cost: Points | UnsetType = UNSET
    stock: Annotated[int, Meta(ge=0, le=MAX_POINTS)] | None | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    metadata: Metadata | None | UnsetType = UNSET


class RedemptionIn(_In):
    member_id: MemberId
    reward_id: Annotated[str, Meta(min_length=1, max_length=64)]
    quantity: Annotated[int, Meta(ge=1, le=1_000)] = 1
    metadata: Metadata | None = None


# Responses


class NextExpiration(Struct):
    points: int
    expires_at: datetime


class BalanceOut(Struct):
    member_id: str
    balance: int
    lifetime_earned: int
    lifetime_redeemed: int
    pending: int
    lifetime_deducted: int
    lifetime_expired: int
    lifetime_transferred_in: int
    lifetime_transferred_out: int
    next_expiration: NextExpiration | None


class LotOut(Struct):
    """What is left of one award, refund or transfer received, and when it expires."""

    lot_id: str
    transaction_id: str
    remaining: int
    expires_at: datetime | None


class KeyOut(Struct):
    """The key a request was made with: what it may do, and in which program."""

    key_id: str
    scope: str
    program: str


class TransactionCreatedOut(Struct):
    transaction_id: str
    member_id: str
    points: int
    type: str
    status: str
    reason: str
    reference: str | None
    metadata: StoredJson | None
    new_balance: int
    available_at: datetime | None
    expires_at: datetime | None
    created_at: datetime


class TransferOut(Struct):
    """Both rows of a transfer, each as `GET /v1/transactions/{id}` shows it."""

    transfer_id: str
    from_: TransactionOut = msgspec.field(name="from")
    to: TransactionOut = msgspec.field(name="to")


class BulkPostingOut(Struct):
    index: int
    member_id: str
    transaction_id: str
    new_balance: int


class ErrorBody(Struct, omit_defaults=True):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class BulkErrorOut(Struct):
    index: int
    member_id: str | None
    error: ErrorBody


class BulkOut(Struct):
    processed: int
    failed: int
    transactions: list[BulkPostingOut]
    errors: list[BulkErrorOut]


class ImportErrorOut(Struct):
    code: str
    message: str


class ImportRowOut(Struct):
    line: int
    member_id: str | None
    status: str
    transaction_id: str | None
    error: ImportErrorOut | None


class ImportOut(Struct):
    rows: int
    awarded: int
    replayed: int
    results: list[ImportRowOut]


class ProgramOut(Struct):
    name: str
    points_expire_after_days: int | None
    created_at: datetime
    enrol_on_award: bool


class ReportOutstanding(Struct):
    balance: int
    pending: int


class ReportExpiring(Struct):
    before: datetime
    points: int


class ReportMembers(Struct):
    total: int
    active_in_period: int


class ReportPeriodOut(Struct):
    start: date
    awarded: int
    deducted: int
    redeemed: int
    refunded: int
    expired: int
    transferred: int
    reversed: int


class ReportOut(Struct):
    from_: date = msgspec.field(name="from")
    to: date = msgspec.field()
    interval: str = msgspec.field()
    outstanding: ReportOutstanding = msgspec.field()
    expiring: list[ReportExpiring] = msgspec.field()
    members: ReportMembers = msgspec.field()
    periods: list[ReportPeriodOut] = msgspec.field()


class HealthOut(Struct):
    status: str


class EventOut(Struct):
    """An event as the feed lists it and a webhook delivers it."""

    event_id: str
    type: str
    timestamp: datetime
    data: StoredJson


class FeedMeta(Struct):
    limit: int
    has_more: bool
    next_after: str | None


class ListMeta(Struct):
    page: int
    per_page: int
    total: int
    total_pages: int


class ErrorOut(Struct):
    success: bool
    error: ErrorBody


def stored_json(value: dict[str, Any] | None) -> str | None:
    """The text a metadata object is stored (and later returned) as."""
    return None if value is None else msgspec.json.encode(value).decode()


# Webhooks (api.md section 8)

WebhookUrl = Annotated[
    str, Meta(min_length=1, max_length=2048, description="An http or https URL, up to 2048.")
]
EventTypes = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=100)]],
    Meta(min_length=1, max_length=50, description='Event types, or ["*"] for every one.'),
]
Description = Annotated[str, Meta(max_length=500)]


class WebhookEndpointIn(_In):
    url: WebhookUrl
    events: EventTypes = msgspec.field(default_factory=lambda: ["*"])
    description: Description | None = None


class WebhookEndpointPatch(_In):
    url: WebhookUrl | UnsetType = UNSET
    events: EventTypes | UnsetType = UNSET
    description: Description | None | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class RecoverIn(_In):
    since: Timestamp


class WebhookEndpointOut(Struct):
    endpoint_id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


class WebhookEndpointSecretOut(Struct):
    """An endpoint as created or rotated: the only answers that show its secret."""

    endpoint_id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    secret: str
    created_at: datetime
    updated_at: datetime


class WebhookEndpointDeletedOut(Struct):
    endpoint_id: str
    deleted: bool


class DeliveryOut(Struct):
    delivery_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RecoveredOut(Struct):
    queued: int
