"""Tally's use cases. Every change to a ledger goes through `Ledger._change`.

Each use case is a unit of work (a function of one `Tx`) that the store runs atomically. Before
any read or change of a member, what is due by `now` is applied first (pending awards post,
lots expire), so no answer ever shows a stale figure. Time comes from the injected clock only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from tally import ids, rules
from tally.commands import (
    AwardCommand,
    BalanceView,
    BulkCommand,
    BulkFailure,
    BulkItemError,
    BulkOutcome,
    Clock,
    DeductCommand,
    Idempotency,
    Listing,
    Posting,
    RedeemCommand,
    RedemptionResult,
    Reply,
    RewardChanges,
    RewardDraft,
    SweepReport,
)
from tally.domain import (
    Entry,
    EntryStatus,
    EntryType,
    HistoryQuery,
    Member,
    Page,
    Profile,
    Program,
    Redemption,
    RedemptionStatus,
    Reward,
    Scope,
)
from tally.errors import (
    Forbidden,
    IdempotencyInProgress,
    IdempotencyKeyReused,
    MemberExists,
    MemberNotFound,
    NotCancellable,
    OutOfStock,
    RewardInactive,
    TallyError,
    TransactionNotFound,
    Unauthorized,
)
from tally.keys import KeyCache, Principal, hash_secret, well_formed
from tally.ports import Store, StoredReply, Tx

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")

IDEMPOTENCY_RETENTION = timedelta(hours=24)


def system_clock() -> datetime:
    return datetime.now(UTC)


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

    async def _view(
        self, read: Callable[[Tx, datetime, bool], T], *, one_statement: bool = False
    ) -> T:
        """Run a read; if it finds a member with work due, run it again as a write."""
        try:
            return await self._store.read(
                lambda tx: read(tx, self._clock(), False), one_statement=one_statement
            )
        except rules.Due:
            return await self._store.write(lambda tx: read(tx, self._clock(), True))

    # auth

    async def authenticate(self, secret: str | None, *, needs: Scope) -> Principal:
        if not secret or not well_formed(secret):
            raise Unauthorized("A valid API key is required: Authorization: Bearer <key>.")
        digest = hash_secret(secret)
        found, principal = self._keys.get(digest)
        if not found:
            record = await self._store.read(lambda tx: tx.find_key(digest), one_statement=True)
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
            locked = rules.locked_member(tx, program_id, cmd.member_id, now)
            return rules.award(
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
            named = {i.member_id: None for i in cmd.items if not isinstance(i, BulkItemError)}
            members = rules.locked_members(tx, program_id, list(named), now)
            postings: list[tuple[int, Posting]] = []
            failures: list[BulkFailure] = []
            for index, item in enumerate(cmd.items):
                if isinstance(item, BulkItemError):
                    failures.append(BulkFailure(index, item.member_id, item.error))
                    continue
                locked = members.get(item.member_id)
                try:
                    if locked is None:
                        raise MemberNotFound(f"Member {item.member_id} does not exist.")
                    posting = rules.plan_award(
                        locked.member,
                        item,
                        expire_after_days=locked.expire_after_days,
                        now=now,
                    )
                except TallyError as error:
                    failures.append(BulkFailure(index, item.member_id, error))
                    continue
                members[item.member_id] = replace(
                    locked, member=replace(locked.member, account=posting.account)
                )
                postings.append((index, posting))
            if cmd.atomic and failures:
                raise rules.bulk_rejected(failures, len(cmd.items))
            rules.write_awards(tx, [posting for _, posting in postings])
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
            locked = rules.locked_member(tx, program_id, cmd.member_id, now, spending=cmd.points)
            return rules.spend(
                tx,
                locked.member,
                EntryType.DEDUCT,
                cmd.points,
                reason=cmd.reason,
                now=now,
                reference=cmd.reference,
                metadata=cmd.metadata,
                lots=locked.spend_lots,
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
            member = rules.locked_member(tx, program_id, entry.member_id, now).member
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
            state = rules.current_state(
                tx, program_id, member_id, now, writable, with_expiration=True
            )
            member = state.member
            return BalanceView(member.member_id, member.account, state.next_expiration)

        return await self._view(read, one_statement=True)

    async def history(
        self, program_id: int, member_id: str, query: HistoryQuery, page: Page
    ) -> Listing[Entry]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Entry]:
            member = rules.current_member(tx, program_id, member_id, now, writable)
            return rules.history_page(tx, member, query, page)

        return await self._view(read)

    async def transaction(self, program_id: int, transaction_id: str) -> Entry:
        def read(tx: Tx, now: datetime, writable: bool) -> Entry:
            entry = tx.get_entry(program_id, transaction_id)
            if entry is None:
                raise TransactionNotFound(f"Transaction {transaction_id} does not exist.")
            rules.current_member(tx, program_id, entry.member_id, now, writable)
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

        return await self._view(read, one_statement=True)

    async def members(self, program_id: int, page: Page) -> Listing[Member]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Member]:
            total = tx.count_members(program_id)
            rows = tx.list_members(program_id, offset=page.offset, limit=page.size)
            return Listing(rows, total, page)

        return await self._view(read)

    # program

    async def program(self, program_id: int) -> Program:
        return await self._store.read(lambda tx: tx.get_program(program_id), one_statement=True)

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
            return rules.reward_or_raise(tx, program_id, reward_id)

        return await self._view(read, one_statement=True)

    async def rewards(self, program_id: int, page: Page) -> Listing[Reward]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Reward]:
            rows = tx.list_rewards(program_id, offset=page.offset, limit=page.size)
            return Listing(rows, tx.count_rewards(program_id), page)

        return await self._view(read)

    async def update_reward(
        self, program_id: int, reward_id: str, changes: RewardChanges
    ) -> Reward:
        def work(tx: Tx) -> Reward:
            reward = rules.reward_or_raise(tx, program_id, reward_id, lock=True)
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
            member = rules.locked_member(tx, program_id, cmd.member_id, now).member
            reward = rules.reward_or_raise(tx, program_id, cmd.reward_id, lock=True)
            if not reward.active:
                raise RewardInactive(f"Reward {reward.id} is not active.")
            if reward.stock is not None and reward.stock < cmd.quantity:
                raise OutOfStock(
                    f"Reward {reward.id} has {reward.stock} in stock, {cmd.quantity} asked for."
                )
            points = reward.points_cost * cmd.quantity
            posting = rules.spend(
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
            found = rules.redemption_or_raise(tx, program_id, redemption_id)
            locked = rules.locked_member(tx, program_id, found.member_id, now)
            redemption = rules.redemption_or_raise(tx, program_id, redemption_id, lock=True)
            if redemption.status != RedemptionStatus.COMPLETED:
                raise NotCancellable(f"Redemption {redemption_id} is already cancelled.")
            reward = rules.reward_or_raise(tx, program_id, redemption.reward_id, lock=True)
            posting = rules.refund(
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
            return rules.redemption_or_raise(tx, program_id, redemption_id)

        return await self._view(read, one_statement=True)

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
                await self._store.write(
                    partial(rules.catch_up_members, members=due, clock=self._clock)
                )
                members += len(due)
            if len(due) < batch:
                break
        purged = await self._store.write(
            lambda tx: tx.purge_replies(before=self._clock() - IDEMPOTENCY_RETENTION)
        )
        return SweepReport(members, purged)


def _in_progress(idempotency: Idempotency | None) -> str:
    key = "" if idempotency is None else f" {idempotency.key!r}"
    return f"A request with Idempotency-Key{key} is still in progress; retry shortly."
