"""Tally's use cases. Every change to a ledger goes through `Ledger._change`.

Each use case is a unit of work (a function of one `Tx`) that the store runs atomically. Before
any read or change of a member, what is due by `now` is applied first (pending awards post,
lots expire), so no answer ever shows a stale figure. Time comes from the injected clock only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Generic, TypeVar

from tally import ids
from tally.domain import (
    MAX_BALANCE,
    Account,
    Draw,
    Entry,
    EntryStatus,
    EntryType,
    Expiry,
    HistoryQuery,
    Lot,
    Maturity,
    Member,
    Page,
    PendingAward,
    Profile,
    Program,
    Redemption,
    RedemptionStatus,
    Reward,
    Scope,
    default_expiry,
    due_events,
    plan_spend,
)
from tally.errors import (
    Detail,
    Forbidden,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    InsufficientPoints,
    MemberExists,
    MemberNotFound,
    NotCancellable,
    OutOfStock,
    RedemptionNotFound,
    RewardInactive,
    RewardNotFound,
    TallyError,
    TransactionNotFound,
    Unauthorized,
    ValidationFailed,
    invalid,
)
from tally.keys import KeyCache, Principal, generate_key, hash_secret, well_formed
from tally.ports import LedgerCheck, MemberState, Store, StoredReply, Tx

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")
Clock = Callable[[], datetime]

IDEMPOTENCY_RETENTION = timedelta(hours=24)
LOT_BATCH = 16


def system_clock() -> datetime:
    return datetime.now(UTC)


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
class CreatedKey:
    key_id: str
    program: str
    scope: Scope
    secret: str


@dataclass(frozen=True, slots=True)
class SweepReport:
    members: int = 0
    purged_replies: int = 0


class _Due(Exception):
    """Raised inside a read when the member has work due: the read is retried as a write."""


# The rules applied to one member inside one transaction.


def _locked_member(tx: Tx, program_id: int, member_id: str, now: datetime) -> MemberState:
    """The member, locked for a change and brought up to date with everything due by `now`."""
    locked = tx.member_state(program_id, member_id, now=now, lock=True)
    if locked is None:
        raise MemberNotFound(f"Member {member_id} does not exist.")
    if locked.due:
        return replace(locked, member=_catch_up(tx, locked.member, now), due=False)
    return locked


def _catch_up(tx: Tx, member: Member, now: datetime) -> Member:
    """Post pending awards and expire lots that are due by `now`, in the order they fell due."""
    pending = [
        PendingAward(e.id, e.points, e.available_at or e.created_at, e.expires_at)
        for e in tx.pending_awards(member.pk, due_by=now)
    ]
    account = member.account
    for event in due_events(pending, tx.open_lots(member.pk, expiring_by=now), now=now):
        if isinstance(event, Maturity):
            account = _mature(tx, member, account, event)
        else:
            account = _expire(tx, member, account, event)
    tx.save_account(member.pk, account)
    return replace(member, account=account)


def _mature(tx: Tx, member: Member, account: Account, event: Maturity) -> Account:
    award = event.award
    account = account.hold(-award.points).post(EntryType.AWARD, award.points)
    tx.post_pending(
        award.entry_id, seq=account.last_seq, balance_after=account.balance, posted_at=event.at
    )
    tx.insert_lot(
        Lot(award.entry_id, award.points, award.expires_at, account.last_seq), member_pk=member.pk
    )
    return account


def _expire(tx: Tx, member: Member, account: Account, event: Expiry) -> Account:
    lot = event.lot
    account = account.post(EntryType.EXPIRE, -lot.remaining).counted()
    entry = _new_entry(
        member,
        account,
        EntryType.EXPIRE,
        -lot.remaining,
        reason=f"Expired: what was left of {lot.entry_id}",
        now=event.at,
    )
    tx.insert_entry(entry)
    tx.set_remaining(lot.entry_id, 0)
    tx.insert_draws(entry.id, [Draw(lot.entry_id, lot.remaining)])
    return account


def _new_entry(
    member: Member,
    account: Account,
    kind: EntryType,
    points: int,
    *,
    reason: str,
    now: datetime,
    reference: str | None = None,
    metadata: str | None = None,
    expires_at: datetime | None = None,
) -> Entry:
    """A posted entry at the account's newest ledger position."""
    return Entry(
        id=ids.new_id("txn_"),
        program_id=member.program_id,
        member_pk=member.pk,
        member_id=member.member_id,
        seq=account.last_seq,
        type=kind,
        status=EntryStatus.POSTED,
        points=points,
        reason=reason,
        reference=reference,
        metadata=metadata,
        balance_after=account.balance,
        created_at=now,
        available_at=None,
        expires_at=expires_at,
        posted_at=None,
    )


def _award(
    tx: Tx, member: Member, cmd: AwardCommand, *, expire_after_days: int | None, now: datetime
) -> Posting:
    pending = cmd.available_at is not None and cmd.available_at > now
    effective = cmd.available_at if pending and cmd.available_at else now
    expires_at = cmd.expires_at
    if expires_at is None:
        try:
            expires_at = default_expiry(effective_at=effective, expire_after_days=expire_after_days)
        except OverflowError:
            raise invalid(
                "available_at",
                "available_at is so far ahead that the program's expiry policy would end after "
                "the year 9999.",
            ) from None
    elif expires_at <= effective:
        raise invalid(
            "expires_at",
            "expires_at must be later than available_at, or than now for points available now.",
        )
    account = member.account
    if account.balance + account.pending + cmd.points > MAX_BALANCE:
        raise invalid("points", f"Member {member.member_id} cannot hold more points.")
    if pending:
        account = account.hold(cmd.points).numbered().counted()
        entry = replace(
            _new_entry(member, account, EntryType.AWARD, cmd.points, reason=cmd.reason, now=now),
            status=EntryStatus.PENDING,
            balance_after=None,
        )
    else:
        account = account.post(EntryType.AWARD, cmd.points).counted()
        entry = _new_entry(member, account, EntryType.AWARD, cmd.points, reason=cmd.reason, now=now)
    entry = replace(
        entry,
        reference=cmd.reference,
        metadata=cmd.metadata,
        available_at=cmd.available_at,
        expires_at=expires_at,
    )
    tx.insert_entry(entry)
    if not pending:
        tx.insert_lot(Lot(entry.id, cmd.points, expires_at, entry.seq), member_pk=member.pk)
    tx.save_account(member.pk, account)
    return Posting(entry, account)


def _spend(
    tx: Tx,
    member: Member,
    kind: EntryType,
    points: int,
    *,
    reason: str,
    now: datetime,
    reference: str | None = None,
    metadata: str | None = None,
) -> Posting:
    """Take `points` from the member's lots in spend order, as one entry of `kind`."""
    account = member.account
    if account.balance < points:
        message = f"Member {member.member_id} has {account.balance} points, needs {points}."
        raise InsufficientPoints(
            message,
            details=[
                Detail(message, "points", {"available": account.balance, "requested": points})
            ],
        )
    lots = tx.open_lots(member.pk)
    draws = plan_spend(lots, points)
    account = account.post(kind, -points).counted()
    entry = _new_entry(
        member,
        account,
        kind,
        -points,
        reason=reason,
        now=now,
        reference=reference,
        metadata=metadata,
    )
    tx.insert_entry(entry)
    remaining = {lot.entry_id: lot.remaining for lot in lots}
    for draw in draws:
        tx.set_remaining(draw.lot_id, remaining[draw.lot_id] - draw.points)
    tx.insert_draws(entry.id, draws)
    tx.save_account(member.pk, account)
    return Posting(entry, account)


def _refund(tx: Tx, locked: MemberState, points: int, *, reason: str, now: datetime) -> Posting:
    """Give `points` back as a new lot that expires under the program's current policy."""
    expires_at = default_expiry(effective_at=now, expire_after_days=locked.expire_after_days)
    member = locked.member
    account = member.account.post(EntryType.REFUND, points).counted()
    entry = _new_entry(
        member, account, EntryType.REFUND, points, reason=reason, now=now, expires_at=expires_at
    )
    tx.insert_entry(entry)
    tx.insert_lot(Lot(entry.id, points, expires_at, entry.seq), member_pk=member.pk)
    tx.save_account(member.pk, account)
    return Posting(entry, account)


def _history_page(tx: Tx, member: Member, query: HistoryQuery, page: Page) -> Listing[Entry]:
    total = tx.count_entries(member, query) if query.filtered else member.account.entry_count
    if page.offset >= total:
        return Listing([], total, page)
    # Pages past the middle are read from the oldest end, so the last page of a long history
    # costs as little as the first.
    from_oldest = total - page.offset - page.size
    if page.offset > total // 2:
        limit = page.size + min(from_oldest, 0)
        rows = tx.list_entries(
            member, query, offset=max(from_oldest, 0), limit=limit, newest_first=False
        )
        return Listing(rows[::-1], total, page)
    rows = tx.list_entries(member, query, offset=page.offset, limit=page.size, newest_first=True)
    return Listing(rows, total, page)


class Ledger:
    """The use cases of one running server (or one CLI command) over one store."""

    def __init__(
        self, store: Store, *, clock: Clock = system_clock, key_cache: KeyCache | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._keys = key_cache or KeyCache()
        self._inflight: set[tuple[int, str]] = set()

    # the one write path

    async def _change(
        self,
        program_id: int,
        idempotency: Idempotency | None,
        effect: Callable[[Tx, datetime], R],
        render: Callable[[R], tuple[int, bytes]],
    ) -> Reply:
        """Apply `effect` once: its reply is stored under the Idempotency-Key in the same commit."""
        marker = None if idempotency is None else (program_id, idempotency.key)
        if marker is not None:
            if marker in self._inflight:
                raise IdempotencyInProgress(_in_progress(idempotency))
            self._inflight.add(marker)

        def work(tx: Tx) -> Reply:
            now = self._clock()
            if idempotency is not None:
                if not tx.claim_idempotency_key(program_id, idempotency.key):
                    raise IdempotencyInProgress(_in_progress(idempotency))
                stored = tx.get_reply(program_id, idempotency.key)
                if stored is not None:
                    if stored.fingerprint != idempotency.fingerprint:
                        raise IdempotencyKeyReused(
                            f"Idempotency-Key {idempotency.key!r} was already used for a "
                            "different request."
                        )
                    return Reply(stored.status, stored.body, replayed=True)
            status, body = render(effect(tx, now))
            if idempotency is not None:
                reply = StoredReply(idempotency.fingerprint, status, body)
                tx.put_reply(program_id, idempotency.key, reply, now=now)
            return Reply(status, body)

        try:
            return await self._store.write(work)
        finally:
            if marker is not None:
                self._inflight.discard(marker)

    async def _view(self, read: Callable[[Tx, datetime, bool], T]) -> T:
        """Run a read; if it finds a member with work due, run it again as a write."""
        try:
            return await self._store.read(lambda tx: read(tx, self._clock(), False))
        except _Due:
            return await self._store.write(lambda tx: read(tx, self._clock(), True))

    # auth

    async def authenticate(self, secret: str | None, *, needs: Scope) -> Principal:
        if not secret or not well_formed(secret):
            raise Unauthorized("A valid API key is required: Authorization: Bearer <key>.")
        digest = hash_secret(secret)
        found, principal = self._keys.get(digest)
        if not found:
            record = await self._store.read(lambda tx: tx.find_key(digest))
            principal = None
            if record is not None and not record.revoked:
                principal = Principal(record.key_id, record.program_id, record.scope)
            self._keys.put(digest, principal)
        if principal is None:
            raise Unauthorized("The API key is unknown or has been revoked.")
        if needs is Scope.WRITE and principal.scope != Scope.WRITE:
            raise Forbidden("This API key may only read; this route needs the write scope.")
        return principal

    # points

    async def award(
        self,
        program_id: int,
        cmd: AwardCommand,
        *,
        idempotency: Idempotency | None,
        render: Callable[[Posting], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Posting:
            locked = _locked_member(tx, program_id, cmd.member_id, now)
            return _award(
                tx, locked.member, cmd, expire_after_days=locked.expire_after_days, now=now
            )

        return await self._change(program_id, idempotency, effect, render)

    async def award_bulk(
        self,
        program_id: int,
        cmd: BulkCommand,
        *,
        idempotency: Idempotency | None,
        render: Callable[[BulkOutcome], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> BulkOutcome:
            members: dict[str, MemberState | None] = {}
            postings: list[tuple[int, Posting]] = []
            failures: list[BulkFailure] = []
            for index, item in enumerate(cmd.items):
                if isinstance(item, BulkItemError):
                    failures.append(BulkFailure(index, item.member_id, item.error))
                    continue
                try:
                    if item.member_id not in members:
                        members[item.member_id] = _locked_member(
                            tx, program_id, item.member_id, now
                        )
                    locked = members[item.member_id]
                    if locked is None:
                        raise MemberNotFound(f"Member {item.member_id} does not exist.")
                    posting = _award(
                        tx,
                        locked.member,
                        item,
                        expire_after_days=locked.expire_after_days,
                        now=now,
                    )
                except MemberNotFound as error:
                    members[item.member_id] = None
                    failures.append(BulkFailure(index, item.member_id, error))
                    continue
                except TallyError as error:
                    failures.append(BulkFailure(index, item.member_id, error))
                    continue
                members[item.member_id] = replace(
                    locked, member=replace(locked.member, account=posting.account)
                )
                postings.append((index, posting))
            if cmd.atomic and failures:
                raise _bulk_rejected(failures, len(cmd.items))
            return BulkOutcome(postings, failures)

        return await self._change(program_id, idempotency, effect, render)

    async def deduct(
        self,
        program_id: int,
        cmd: DeductCommand,
        *,
        idempotency: Idempotency | None,
        render: Callable[[Posting], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Posting:
            member = _locked_member(tx, program_id, cmd.member_id, now).member
            return _spend(
                tx,
                member,
                EntryType.DEDUCT,
                cmd.points,
                reason=cmd.reason,
                now=now,
                reference=cmd.reference,
                metadata=cmd.metadata,
            )

        return await self._change(program_id, idempotency, effect, render)

    async def cancel_award(
        self,
        program_id: int,
        transaction_id: str,
        *,
        idempotency: Idempotency | None,
        render: Callable[[Posting], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Posting:
            entry = tx.get_entry(program_id, transaction_id)
            if entry is None:
                raise TransactionNotFound(f"Transaction {transaction_id} does not exist.")
            member = _locked_member(tx, program_id, entry.member_id, now).member
            entry = tx.get_entry(program_id, transaction_id) or entry
            if entry.status != EntryStatus.PENDING:
                raise NotCancellable(
                    f"Transaction {transaction_id} is {entry.type.value}, {entry.status.value}; "
                    "only a pending award can be cancelled."
                )
            account = member.account.hold(-entry.points)
            tx.cancel_pending(entry.id)
            tx.save_account(member.pk, account)
            return Posting(replace(entry, status=EntryStatus.CANCELLED), account)

        return await self._change(program_id, idempotency, effect, render)

    async def balance(self, program_id: int, member_id: str) -> BalanceView:
        def read(tx: Tx, now: datetime, writable: bool) -> BalanceView:
            member = _current_member(tx, program_id, member_id, now, writable)
            return BalanceView(member.member_id, member.account, tx.next_expiration(member.pk))

        return await self._view(read)

    async def history(
        self, program_id: int, member_id: str, query: HistoryQuery, page: Page
    ) -> Listing[Entry]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Entry]:
            member = _current_member(tx, program_id, member_id, now, writable)
            return _history_page(tx, member, query, page)

        return await self._view(read)

    async def transaction(self, program_id: int, transaction_id: str) -> Entry:
        def read(tx: Tx, now: datetime, writable: bool) -> Entry:
            entry = tx.get_entry(program_id, transaction_id)
            if entry is None:
                raise TransactionNotFound(f"Transaction {transaction_id} does not exist.")
            _current_member(tx, program_id, entry.member_id, now, writable)
            return tx.get_entry(program_id, transaction_id) or entry

        return await self._view(read)

    # members

    async def create_member(
        self,
        program_id: int,
        profile: Profile,
        *,
        idempotency: Idempotency | None,
        render: Callable[[Member], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Member:
            chosen = (
                profile if profile.member_id else replace(profile, member_id=ids.new_id("mem_"))
            )
            if not tx.insert_member(program_id, chosen, now=now):
                raise MemberExists(f"Member {chosen.member_id} already exists.")
            member = tx.get_member(program_id, chosen.member_id)
            assert member is not None
            return member

        return await self._change(program_id, idempotency, effect, render)

    async def member(self, program_id: int, member_id: str) -> Member:
        def read(tx: Tx, now: datetime, writable: bool) -> Member:
            member = tx.get_member(program_id, member_id)
            if member is None:
                raise MemberNotFound(f"Member {member_id} does not exist.")
            return member

        return await self._view(read)

    async def members(self, program_id: int, page: Page) -> Listing[Member]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Member]:
            total = tx.count_members(program_id)
            rows = tx.list_members(program_id, offset=page.offset, limit=page.size)
            return Listing(rows, total, page)

        return await self._view(read)

    # program

    async def program(self, program_id: int) -> Program:
        return await self._store.read(lambda tx: tx.get_program(program_id))

    async def set_expiry_policy(self, program_id: int, days: int | None) -> Program:
        def work(tx: Tx) -> Program:
            tx.set_expiry_policy(program_id, days)
            return tx.get_program(program_id)

        return await self._store.write(work)

    # rewards and redemptions

    async def create_reward(
        self,
        program_id: int,
        draft: RewardDraft,
        *,
        idempotency: Idempotency | None,
        render: Callable[[Reward], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> Reward:
            reward = Reward(
                id=ids.new_id("rwd_"),
                program_id=program_id,
                name=draft.name,
                points_cost=draft.points_cost,
                stock=draft.stock,
                active=draft.active,
                metadata=draft.metadata,
                created_at=now,
            )
            tx.insert_reward(reward)
            return reward

        return await self._change(program_id, idempotency, effect, render)

    async def reward(self, program_id: int, reward_id: str) -> Reward:
        def read(tx: Tx, now: datetime, writable: bool) -> Reward:
            return _reward_or_raise(tx, program_id, reward_id)

        return await self._view(read)

    async def rewards(self, program_id: int, page: Page) -> Listing[Reward]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Reward]:
            rows = tx.list_rewards(program_id, offset=page.offset, limit=page.size)
            return Listing(rows, tx.count_rewards(program_id), page)

        return await self._view(read)

    async def update_reward(
        self, program_id: int, reward_id: str, changes: RewardChanges
    ) -> Reward:
        def work(tx: Tx) -> Reward:
            reward = _reward_or_raise(tx, program_id, reward_id, lock=True)
            reward = replace(
                reward,
                name=reward.name if changes.name is None else changes.name,
                points_cost=(
                    reward.points_cost if changes.points_cost is None else changes.points_cost
                ),
                stock=changes.stock if changes.stock_set else reward.stock,
                active=reward.active if changes.active is None else changes.active,
                metadata=changes.metadata if changes.metadata_set else reward.metadata,
            )
            tx.update_reward(reward)
            return reward

        return await self._store.write(work)

    async def redeem(
        self,
        program_id: int,
        cmd: RedeemCommand,
        *,
        idempotency: Idempotency | None,
        render: Callable[[RedemptionResult], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> RedemptionResult:
            member = _locked_member(tx, program_id, cmd.member_id, now).member
            reward = _reward_or_raise(tx, program_id, cmd.reward_id, lock=True)
            if not reward.active:
                raise RewardInactive(f"Reward {reward.id} is not active.")
            if reward.stock is not None and reward.stock < cmd.quantity:
                raise OutOfStock(
                    f"Reward {reward.id} has {reward.stock} in stock, {cmd.quantity} asked for."
                )
            points = reward.points_cost * cmd.quantity
            posting = _spend(
                tx,
                member,
                EntryType.REDEEM,
                points,
                reason=reward.name,
                now=now,
                metadata=cmd.metadata,
            )
            if reward.stock is not None:
                tx.update_reward(replace(reward, stock=reward.stock - cmd.quantity))
            redemption = Redemption(
                id=ids.new_id("red_"),
                program_id=program_id,
                member_pk=member.pk,
                member_id=member.member_id,
                reward_id=reward.id,
                quantity=cmd.quantity,
                points=points,
                status=RedemptionStatus.COMPLETED,
                transaction_id=posting.entry.id,
                refund_transaction_id=None,
                created_at=now,
                cancelled_at=None,
            )
            tx.insert_redemption(redemption)
            return RedemptionResult(redemption, posting.entry)

        return await self._change(program_id, idempotency, effect, render)

    async def cancel_redemption(
        self,
        program_id: int,
        redemption_id: str,
        *,
        idempotency: Idempotency | None,
        render: Callable[[RedemptionResult], tuple[int, bytes]],
    ) -> Reply:
        def effect(tx: Tx, now: datetime) -> RedemptionResult:
            found = _redemption_or_raise(tx, program_id, redemption_id)
            locked = _locked_member(tx, program_id, found.member_id, now)
            redemption = _redemption_or_raise(tx, program_id, redemption_id, lock=True)
            if redemption.status != RedemptionStatus.COMPLETED:
                raise NotCancellable(f"Redemption {redemption_id} is already cancelled.")
            reward = _reward_or_raise(tx, program_id, redemption.reward_id, lock=True)
            posting = _refund(
                tx,
                locked,
                redemption.points,
                reason=f"Refund: {reward.name} ({redemption.id})",
                now=now,
            )
            if reward.stock is not None:
                tx.update_reward(replace(reward, stock=reward.stock + redemption.quantity))
            tx.cancel_redemption(redemption.id, refund_id=posting.entry.id, now=now)
            cancelled = replace(
                redemption,
                status=RedemptionStatus.CANCELLED,
                refund_transaction_id=posting.entry.id,
                cancelled_at=now,
            )
            return RedemptionResult(cancelled, posting.entry)

        return await self._change(program_id, idempotency, effect, render)

    async def redemption(self, program_id: int, redemption_id: str) -> Redemption:
        def read(tx: Tx, now: datetime, writable: bool) -> Redemption:
            return _redemption_or_raise(tx, program_id, redemption_id)

        return await self._view(read)

    async def redemptions(self, program_id: int, member_id: str, page: Page) -> Listing[Redemption]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Redemption]:
            member = tx.get_member(program_id, member_id)
            if member is None:
                raise MemberNotFound(f"Member {member_id} does not exist.")
            rows = tx.list_redemptions(member, offset=page.offset, limit=page.size)
            return Listing(rows, tx.count_redemptions(member), page)

        return await self._view(read)

    # maintenance

    async def sweep(self, *, batch: int = 100, rounds: int = 10_000) -> SweepReport:
        """Apply everything due, `batch` members per commit; safe from many processes at once."""
        members = 0
        for _ in range(rounds):
            due = await self._store.read(
                lambda tx: tx.members_with_due_work(now=self._clock(), limit=batch)
            )
            if due:
                await self._store.write(partial(_catch_up_members, members=due, clock=self._clock))
                members += len(due)
            if len(due) < batch:
                break
        purged = await self._store.write(
            lambda tx: tx.purge_replies(before=self._clock() - IDEMPOTENCY_RETENTION)
        )
        return SweepReport(members, purged)


def _catch_up_members(tx: Tx, *, members: list[tuple[int, str]], clock: Clock) -> None:
    now = clock()
    for program_id, member_id in members:
        _locked_member(tx, program_id, member_id, now)


def _current_member(
    tx: Tx, program_id: int, member_id: str, now: datetime, writable: bool
) -> Member:
    """The member with everything due by `now` applied.

    A read transaction cannot apply anything: it raises `_Due`, and the read runs again as a
    write, where the member is locked and brought up to date.
    """
    if writable:
        return _locked_member(tx, program_id, member_id, now).member
    state = tx.member_state(program_id, member_id, now=now, lock=False)
    if state is None:
        raise MemberNotFound(f"Member {member_id} does not exist.")
    if state.due:
        raise _Due()
    return state.member


def _reward_or_raise(tx: Tx, program_id: int, reward_id: str, *, lock: bool = False) -> Reward:
    reward = tx.get_reward(program_id, reward_id, lock=lock)
    if reward is None:
        raise RewardNotFound(f"Reward {reward_id} does not exist.")
    return reward


def _redemption_or_raise(
    tx: Tx, program_id: int, redemption_id: str, *, lock: bool = False
) -> Redemption:
    redemption = tx.get_redemption(program_id, redemption_id, lock=lock)
    if redemption is None:
        raise RedemptionNotFound(f"Redemption {redemption_id} does not exist.")
    return redemption


def _in_progress(idempotency: Idempotency | None) -> str:
    key = "" if idempotency is None else f" {idempotency.key!r}"
    return f"A request with Idempotency-Key{key} is still in progress; retry shortly."


def _bulk_rejected(failures: list[BulkFailure], total: int) -> ValidationFailed:
    details = []
    for failure in failures:
        for detail in failure.error.details or [Detail(failure.error.message)]:
            where = f"awards[{failure.index}]"
            field_name = f"{where}.{detail.field}" if detail.field else where
            details.append(
                Detail(detail.message, field_name, {**detail.extra, "code": failure.error.code})
            )
    return ValidationFailed(
        f"{len(failures)} of {total} awards failed; with atomic: true none were applied.",
        details=details,
    )


# Operations the command line runs directly on a store (no server, no event loop).


def create_key(store: Store, *, program: str, scope: Scope, now: datetime) -> CreatedKey:
    new = generate_key()
    key_id = ids.new_id("key_")

    def work(tx: Tx) -> CreatedKey:
        found = tx.ensure_program(program, now=now)
        tx.insert_key(
            key_id=key_id,
            program_id=found.id,
            scope=scope.value,
            secret_hash=new.secret_hash,
            prefix=new.display_prefix,
            now=now,
        )
        return CreatedKey(key_id, found.name, scope, new.secret)

    return store.transact(work)


def bootstrap(store: Store, *, now: datetime) -> CreatedKey | None:
    """On an empty database: the `default` program and a write key (None if not empty)."""
    if store.transact(lambda tx: tx.count_programs()) > 0:
        return None
    return create_key(store, program="default", scope=Scope.WRITE, now=now)


@dataclass(frozen=True, slots=True)
class Mismatch:
    member: str
    problem: str


_COUNTER_OF = {
    EntryType.AWARD: "lifetime_earned",
    EntryType.REDEEM: "lifetime_redeemed",
    EntryType.REFUND: "lifetime_redeemed",
    EntryType.DEDUCT: "lifetime_deducted",
    EntryType.EXPIRE: "lifetime_expired",
}


def _recount(check: LedgerCheck) -> list[Mismatch]:
    """Compare one member's stored counters with what its rows add up to."""
    member = check.member
    name = f"{member.program_id}/{member.member_id}"
    found = [
        Mismatch(name, f"{entry_id} has balance_after {stored}, the chain gives {running}")
        for entry_id, stored, running in check.chain_breaks
    ]
    counters = dict.fromkeys(_COUNTER_OF.values(), 0)
    for kind, points in check.posted_sums.items():
        # Awards count up by their points; spends by their size; a refund takes a redemption back.
        counters[_COUNTER_OF[EntryType(kind)]] += points if kind == EntryType.AWARD else -points
    expected = {
        **counters,
        "balance": sum(check.posted_sums.values()),
        "pending": check.pending_total,
        "entry_count": check.entry_count,
    }
    stored = member.account
    for label, want in expected.items():
        have = getattr(stored, label)
        if want != have:
            found.append(Mismatch(name, f"{label} is {have}, the ledger gives {want}"))
    if check.open_lot_total != stored.balance:
        found.append(
            Mismatch(name, f"open lots hold {check.open_lot_total}, balance is {stored.balance}")
        )
    if stored.balance < 0:
        found.append(Mismatch(name, f"balance is negative: {stored.balance}"))
    return found


def verify(store: Store) -> list[Mismatch]:
    """Recompute every counter from the ledger rows; every difference found, or []."""

    def work(tx: Tx) -> list[Mismatch]:
        found = [problem for check in tx.ledger_checks() for problem in _recount(check)]
        for entry_id, should, drawn in tx.unbalanced_spends():
            found.append(Mismatch(entry_id, f"accounts for {should} points, its draws for {drawn}"))
        return found

    return store.transact(work)


def sweep_now(store: Store, *, clock: Clock = system_clock) -> SweepReport:
    """`tally sweep`: apply everything due, then drop expired idempotency replies."""
    import asyncio

    return asyncio.run(Ledger(store, clock=clock).sweep())
