"""Every API operation, once: a method of `Operations`, named as its `operationId` in
/openapi.json, that describes the request (`calls.py`). `TallyClient` sends it and returns the
result; `AsyncTallyClient` sends it and is awaited; a listing is iterated (`for`, `async for`).

Member-scoped reads take the member id first (`balance("mem_1")`), an object's own operations
take its id first (`get_reward("rwd_…")`); every other argument is a keyword named after the
API's field. Every POST takes `idempotency_key` (one is made up when it is not given).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from msgspec import UNSET, UnsetType

from tally_client.calls import (
    Call,
    Pages,
    changed,
    comma_separated,
    delete,
    feed,
    get,
    given,
    moment,
    numbered,
    patch,
    path,
    post,
    upload,
)
from tally_client.models import (
    AwardItem,
    Balance,
    BulkResult,
    DeletedWebhookEndpoint,
    Delivery,
    Event,
    Health,
    ImportResult,
    Key,
    Lot,
    Member,
    NewTransaction,
    Program,
    Recovered,
    Redemption,
    Report,
    Reward,
    Transaction,
    Transfer,
    WebhookEndpoint,
    WebhookEndpointWithSecret,
)

if TYPE_CHECKING:
    from tally_client.client import AsyncTallyClient, TallyClient

P = ParamSpec("P")
T = TypeVar("T")

Metadata = Mapping[str, Any]
Moment = datetime | date | str


class operation(Generic[P, T]):  # noqa: N801 (a decorator, like `property`)
    """An operation answered with one value. On a `TallyClient` it is a method returning the
    value; on an `AsyncTallyClient`, a coroutine method."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self.build = build
        self.__name__ = build.__name__
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type[Any]) -> operation[P, T]: ...
    @overload
    def __get__(self, client: TallyClient, owner: type[Any]) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: AsyncTallyClient, owner: type[Any]) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, client: TallyClient | AsyncTallyClient | None, owner: type[Any]) -> Any:
        return self if client is None else client._bind(self.build)


class listing(Generic[P, T]):  # noqa: N801
    """An operation that lists: on a `TallyClient` an iterator over every item of every page,
    on an `AsyncTallyClient` an async iterator. Pages are fetched as the iteration reaches
    them."""

    def __init__(self, build: Callable[P, Pages[T]]) -> None:
        self.build = build
        self.__name__ = build.__name__
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: None, owner: type[Any]) -> listing[P, T]: ...
    @overload
    def __get__(self, client: TallyClient, owner: type[Any]) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(
        self, client: AsyncTallyClient, owner: type[Any]
    ) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, client: TallyClient | AsyncTallyClient | None, owner: type[Any]) -> Any:
        return self if client is None else client._bind_pages(self.build)


class Operations:
    """The API's operations; the two clients differ only in how they send them."""

    # Members (api.md sections 3 and 9)

    @operation
    def create_member(
        *,
        member_id: str | None = None,
        email: str | None = None,
        name: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Member]:
        """Enrol a member; without `member_id` the server makes one (`mem_…`)."""
        fields = given(member_id=member_id, email=email, name=name, metadata=metadata)
        return post("/v1/members", Member, fields, idempotency_key)

    @operation
    def get_member(member_id: str) -> Call[Member]:
        return get(path("/v1/members/{}", member_id), Member)

    @listing
    def list_members(*, per_page: int = 100) -> Pages[Member]:
        """Every member of the program."""
        return numbered("/v1/members", Member, "member_id", per_page=per_page)

    @operation
    def update_member(
        member_id: str,
        *,
        email: str | None | UnsetType = UNSET,
        name: str | None | UnsetType = UNSET,
        metadata: Metadata | None | UnsetType = UNSET,
    ) -> Call[Member]:
        """Change the fields given (`None` clears one); the others stay."""
        fields = changed(email=email, name=name, metadata=metadata)
        return patch(path("/v1/members/{}", member_id), Member, fields)

    @operation
    def erase_member(member_id: str, *, idempotency_key: str | None = None) -> Call[Member]:
        """Remove the member's personal data for good; the ledger and balances stay."""
        return post(path("/v1/members/{}/erase", member_id), Member, {}, idempotency_key)

    # Points (sections 4 and 9)

    @operation
    def balance(member_id: str, as_of: datetime | str | None = None) -> Call[Balance]:
        """The balance now, or as it stood at `as_of`."""
        return get(path("/v1/members/{}/balance", member_id), Balance, as_of=moment(as_of))

    @listing
    def history(
        member_id: str,
        type: str | None = None,
        from_: Moment | None = None,
        to: Moment | None = None,
        *,
        per_page: int = 100,
    ) -> Pages[Transaction]:
        """Every transaction of the member, newest first; `from_` and `to` are inclusive (a
        date `to` covers that whole day)."""
        return numbered(
            path("/v1/members/{}/transactions", member_id),
            Transaction,
            "transaction_id",
            type=type,
            **{"from": moment(from_), "to": moment(to)},
            per_page=per_page,
        )

    @listing
    def list_lots(member_id: str, *, per_page: int = 100) -> Pages[Lot]:
        """The member's open lots (what is left of each award, refund or transfer received),
        soonest to expire first."""
        return numbered(path("/v1/members/{}/lots", member_id), Lot, "lot_id", per_page=per_page)

    @operation
    def award(
        *,
        member_id: str,
        points: int,
        reason: str,
        reference: str | None = None,
        metadata: Metadata | None = None,
        available_at: datetime | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
    ) -> Call[NewTransaction]:
        """Award points: posted now, or pending until `available_at`."""
        fields = given(
            member_id=member_id,
            points=points,
            reason=reason,
            reference=reference,
            metadata=metadata,
            available_at=available_at,
            expires_at=expires_at,
        )
        return post("/v1/points/award", NewTransaction, fields, idempotency_key)

    @operation
    def bulk_award(
        *,
        awards: Sequence[AwardItem | Mapping[str, Any]],
        atomic: bool = False,
        idempotency_key: str | None = None,
    ) -> Call[BulkResult]:
        """Up to 10,000 awards, each on its own (or all or none with `atomic=True`)."""
        body = {"awards": list(awards), "atomic": atomic}
        return post("/v1/points/award/bulk", BulkResult, body, idempotency_key)

    @operation
    def deduct(
        *,
        member_id: str,
        points: int,
        reason: str,
        reference: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Call[NewTransaction]:
        """Take points away; more than the balance raises `InsufficientPoints`."""
        fields = given(
            member_id=member_id,
            points=points,
            reason=reason,
            reference=reference,
            metadata=metadata,
        )
        return post("/v1/points/deduct", NewTransaction, fields, idempotency_key)

    @operation
    def transfer(
        *,
        from_member_id: str,
        to_member_id: str,
        points: int,
        reason: str,
        reference: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transfer]:
        """Move points from one member to another; they keep their expiry dates."""
        fields = given(
            from_member_id=from_member_id,
            to_member_id=to_member_id,
            points=points,
            reason=reason,
            reference=reference,
            metadata=metadata,
        )
        return post("/v1/points/transfer", Transfer, fields, idempotency_key)

    @operation
    def get_transaction(transaction_id: str) -> Call[Transaction]:
        return get(path("/v1/transactions/{}", transaction_id), Transaction)

    @operation
    def cancel_transaction(
        transaction_id: str, *, idempotency_key: str | None = None
    ) -> Call[Transaction]:
        """Cancel a pending award."""
        where = path("/v1/transactions/{}/cancel", transaction_id)
        return post(where, Transaction, {}, idempotency_key)

    @operation
    def reverse_transaction(
        transaction_id: str,
        *,
        reason: str,
        points: int | None = None,
        allow_negative: bool | None = None,
        reference: str | None = None,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Transaction]:
        """Take back a posted award (all of it, or `points`), or give back a deduct; taking
        back points already spent needs `allow_negative` (the balance may go below zero)."""
        fields = given(
            reason=reason,
            points=points,
            allow_negative=allow_negative,
            reference=reference,
            metadata=metadata,
        )
        where = path("/v1/transactions/{}/reverse", transaction_id)
        return post(where, Transaction, fields, idempotency_key)

    # CSV files (docs/api.md, "CSV files")

    @operation
    def import_awards(
        csv: bytes | str, *, idempotency_key: str | None = None
    ) -> Call[ImportResult]:
        """Import an awards file (`member_id,points,reason[,reference][,expires_at]`): every
        row is checked, then all are applied or none (a bad row raises `ValidationError`, its
        `details` naming each bad line). Importing the same file again awards nothing twice."""
        content = csv.encode() if isinstance(csv, str) else csv
        return upload("/v1/imports/awards", ImportResult, content, idempotency_key)

    @operation
    def export_transactions(
        *, type: str | None = None, from_: Moment | None = None, to: Moment | None = None
    ) -> Call[str]:
        """The program's transactions as CSV text (the server streams it; this reads it whole:
        for millions of rows use `tally export transactions`)."""
        query = {"type": type, "from": moment(from_), "to": moment(to)}
        return get("/v1/exports/transactions", str, **query)

    # The program (sections 5 and 9)

    @operation
    def current_key() -> Call[Key]:
        """The key this client uses: its id, scope (`read` or `write`) and program."""
        return get("/v1/keys/current", Key)

    @operation
    def get_program() -> Call[Program]:
        return get("/v1/program", Program)

    @operation
    def update_program(
        *,
        points_expire_after_days: int | None | UnsetType = UNSET,
        enrol_on_award: bool | UnsetType = UNSET,
    ) -> Call[Program]:
        """Change the settings given (`points_expire_after_days=None`: points never expire)."""
        fields = changed(
            points_expire_after_days=points_expire_after_days, enrol_on_award=enrol_on_award
        )
        return patch("/v1/program", Program, fields)

    @operation
    def report(
        *,
        from_: Moment | None = None,
        to: Moment | None = None,
        interval: str | None = None,
    ) -> Call[Report]:
        """The points liability: outstanding, expiring, members, and per-period totals."""
        query = {"from": moment(from_), "to": moment(to), "interval": interval}
        return get("/v1/program/report", Report, **query)

    # Rewards and redemptions (section 6)

    @operation
    def create_reward(
        *,
        name: str,
        points_cost: int,
        stock: int | None = None,
        active: bool = True,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Reward]:
        """Add a reward to the catalog; `stock=None` is unlimited."""
        fields = given(
            name=name, points_cost=points_cost, stock=stock, active=active, metadata=metadata
        )
        return post("/v1/rewards", Reward, fields, idempotency_key)

    @listing
    def list_rewards(*, per_page: int = 100) -> Pages[Reward]:
        return numbered("/v1/rewards", Reward, "reward_id", per_page=per_page)

    @operation
    def get_reward(reward_id: str) -> Call[Reward]:
        return get(path("/v1/rewards/{}", reward_id), Reward)

    @operation
    def update_reward(
        reward_id: str,
        *,
        name: str | UnsetType = UNSET,
        points_cost: int | UnsetType = UNSET,
        stock: int | None | UnsetType = UNSET,
        active: bool | UnsetType = UNSET,
        metadata: Metadata | None | UnsetType = UNSET,
    ) -> Call[Reward]:
        """Change the fields given (`stock=None`: unlimited)."""
        fields = changed(
            name=name, points_cost=points_cost, stock=stock, active=active, metadata=metadata
        )
        return patch(path("/v1/rewards/{}", reward_id), Reward, fields)

    @operation
    def redeem(
        *,
        member_id: str,
        reward_id: str,
        quantity: int = 1,
        metadata: Metadata | None = None,
        idempotency_key: str | None = None,
    ) -> Call[Redemption]:
        """Spend `points_cost * quantity` of the member's points on a reward."""
        fields = given(
            member_id=member_id, reward_id=reward_id, quantity=quantity, metadata=metadata
        )
        return post("/v1/redemptions", Redemption, fields, idempotency_key)

    @operation
    def get_redemption(redemption_id: str) -> Call[Redemption]:
        return get(path("/v1/redemptions/{}", redemption_id), Redemption)

    @operation
    def cancel_redemption(
        redemption_id: str, *, idempotency_key: str | None = None
    ) -> Call[Redemption]:
        """Cancel a redemption: its points come back, and the stock."""
        where = path("/v1/redemptions/{}/cancel", redemption_id)
        return post(where, Redemption, {}, idempotency_key)

    @listing
    def redemptions(member_id: str, *, per_page: int = 100) -> Pages[Redemption]:
        """Every redemption of the member, newest first."""
        where = path("/v1/members/{}/redemptions", member_id)
        return numbered(where, Redemption, "redemption_id", per_page=per_page)

    # Events and webhooks (section 8)

    @listing
    def events(
        after: str | None = None,
        *,
        type: str | Sequence[str] | None = None,
        limit: int = 100,
    ) -> Pages[Event]:
        """The program's events after `after`, oldest first, up to the newest one; iterate
        again from the last `event_id` seen to go on."""
        return feed("/v1/events", Event, after=after, type=comma_separated(type), limit=limit)

    @operation
    def create_webhook_endpoint(
        *,
        url: str,
        events: Sequence[str] | None = None,
        description: str | None = None,
        idempotency_key: str | None = None,
    ) -> Call[WebhookEndpointWithSecret]:
        """Add an endpoint (for every event type unless `events` names some); the answer's
        `secret` is shown only here and on rotation."""
        fields = given(
            url=url, events=None if events is None else list(events), description=description
        )
        return post("/v1/webhook_endpoints", WebhookEndpointWithSecret, fields, idempotency_key)

    @listing
    def list_webhook_endpoints(*, per_page: int = 100) -> Pages[WebhookEndpoint]:
        return numbered("/v1/webhook_endpoints", WebhookEndpoint, "endpoint_id", per_page=per_page)

    @operation
    def get_webhook_endpoint(endpoint_id: str) -> Call[WebhookEndpoint]:
        return get(path("/v1/webhook_endpoints/{}", endpoint_id), WebhookEndpoint)

    @operation
    def update_webhook_endpoint(
        endpoint_id: str,
        *,
        url: str | UnsetType = UNSET,
        events: Sequence[str] | UnsetType = UNSET,
        description: str | None | UnsetType = UNSET,
        enabled: bool | UnsetType = UNSET,
    ) -> Call[WebhookEndpoint]:
        """Change the fields given (`enabled=True` re-enables a disabled endpoint)."""
        listed = events if isinstance(events, UnsetType) else list(events)
        fields = changed(url=url, events=listed, description=description, enabled=enabled)
        return patch(path("/v1/webhook_endpoints/{}", endpoint_id), WebhookEndpoint, fields)

    @operation
    def delete_webhook_endpoint(endpoint_id: str) -> Call[DeletedWebhookEndpoint]:
        """Delete an endpoint and its delivery log."""
        return delete(path("/v1/webhook_endpoints/{}", endpoint_id), DeletedWebhookEndpoint)

    @operation
    def rotate_webhook_secret(
        endpoint_id: str, *, idempotency_key: str | None = None
    ) -> Call[WebhookEndpointWithSecret]:
        """A new secret; the old one keeps signing beside it for 24 hours."""
        where = path("/v1/webhook_endpoints/{}/rotate_secret", endpoint_id)
        return post(where, WebhookEndpointWithSecret, {}, idempotency_key)

    @listing
    def list_deliveries(
        endpoint_id: str, *, status: str | None = None, per_page: int = 100
    ) -> Pages[Delivery]:
        """The endpoint's delivery log, newest first (`status`: pending, succeeded, failed)."""
        where = path("/v1/webhook_endpoints/{}/deliveries", endpoint_id)
        return numbered(where, Delivery, "delivery_id", status=status, per_page=per_page)

    @operation
    def retry_delivery(
        endpoint_id: str, delivery_id: str, *, idempotency_key: str | None = None
    ) -> Call[Delivery]:
        """Queue a delivery again, now."""
        where = path("/v1/webhook_endpoints/{}/deliveries/{}/retry", endpoint_id, delivery_id)
        return post(where, Delivery, {}, idempotency_key)

    @operation
    def recover_deliveries(
        endpoint_id: str, *, since: datetime, idempotency_key: str | None = None
    ) -> Call[Recovered]:
        """Queue again every failed delivery since `since`."""
        where = path("/v1/webhook_endpoints/{}/recover", endpoint_id)
        return post(where, Recovered, {"since": since}, idempotency_key)

    # Operations (section 11; no key needed)

    @operation
    def health() -> Call[Health]:
        """Whether the server process is alive."""
        return get("/healthz", Health)

    @operation
    def ready() -> Call[Health]:
        """Whether the database is reachable and migrated (`Unavailable` when not)."""
        return get("/readyz", Health)

    @operation
    def metrics() -> Call[str]:
        """The server process's Prometheus metrics, as text."""
        return get("/metrics", str)
