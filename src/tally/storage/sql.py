"""The `Tx` contract in SQL that SQLite and PostgreSQL both speak.

Queries are written once with `?` placeholders; a `Dialect` holds the few things that differ.
Times are stored as integer microseconds since the epoch (UTC), identical on both backends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tally.domain import (
    Account,
    ApiKey,
    Draw,
    Entry,
    EntryStatus,
    EntryType,
    HistoryQuery,
    Lot,
    Member,
    Profile,
    Program,
    Redemption,
    RedemptionStatus,
    Reward,
    Scope,
)
from tally.ports import KeyRecord, LedgerCheck, MemberState, StoredReply

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEVER = 2**63 - 1
_MICRO = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def _opt_micros(moment: datetime | None) -> int | None:
    return None if moment is None else to_micros(moment)


def _opt_time(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: Any, params: Sequence[Any] = ...) -> Any: ...
    def cursor(self) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the SQL backends."""

    name: str
    placeholder: str
    for_update: str
    for_update_of_member: str  # locks the member row only, not the rows joined to it
    claim_key: Callable[[Connection, int, str], bool]


_MEMBER_COLUMNS = (
    "pk, program_id, member_id, email, name, metadata, created_at, balance, pending, "
    "lifetime_earned, lifetime_redeemed, lifetime_deducted, lifetime_expired, last_seq, "
    "entry_count"
)
_LOCKED_MEMBER_COLUMNS = ", ".join("m." + c for c in _MEMBER_COLUMNS.split(", "))
_ENTRY_COLUMNS = (
    "e.id, e.program_id, e.member_pk, e.seq, e.type, e.status, e.points, e.reason, e.reference, "
    "e.metadata, e.balance_after, e.created_at, e.available_at, e.expires_at, e.posted_at"
)
_REWARD_COLUMNS = "id, program_id, name, points_cost, stock, active, metadata, created_at"
_REDEMPTION_COLUMNS = (
    "r.id, r.program_id, r.member_pk, m.member_id, r.reward_id, r.quantity, r.points, r.status, "
    "r.transaction_id, r.refund_transaction_id, r.created_at, r.cancelled_at"
)


def _member(row: Sequence[Any]) -> Member:
    return Member(
        pk=row[0],
        program_id=row[1],
        profile=Profile(member_id=row[2], email=row[3], name=row[4], metadata=row[5]),
        created_at=from_micros(row[6]),
        account=Account(*row[7:15]),
    )


def _entry(row: Sequence[Any], member_id: str) -> Entry:
    return Entry(
        id=row[0],
        program_id=row[1],
        member_pk=row[2],
        member_id=member_id,
        seq=row[3],
        type=EntryType(row[4]),
        status=EntryStatus(row[5]),
        points=row[6],
        reason=row[7],
        reference=row[8],
        metadata=row[9],
        balance_after=row[10],
        created_at=from_micros(row[11]),
        available_at=_opt_time(row[12]),
        expires_at=_opt_time(row[13]),
        posted_at=_opt_time(row[14]),
    )


def _lot(row: Sequence[Any]) -> Lot:
    expires = None if row[2] == NEVER else from_micros(row[2])
    return Lot(entry_id=row[0], remaining=row[1], expires_at=expires, seq=row[3])


def _reward(row: Sequence[Any]) -> Reward:
    return Reward(
        id=row[0],
        program_id=row[1],
        name=row[2],
        points_cost=row[3],
        stock=row[4],
        active=bool(row[5]),
        metadata=row[6],
        created_at=from_micros(row[7]),
    )


def _redemption(row: Sequence[Any]) -> Redemption:
    return Redemption(
        id=row[0],
        program_id=row[1],
        member_pk=row[2],
        member_id=row[3],
        reward_id=row[4],
        quantity=row[5],
        points=row[6],
        status=RedemptionStatus(row[7]),
        transaction_id=row[8],
        refund_transaction_id=row[9],
        created_at=from_micros(row[10]),
        cancelled_at=_opt_time(row[11]),
    )


def _history_filter(query: HistoryQuery) -> tuple[str, list[Any]]:
    clauses, params = "", list[Any]()
    if query.type is not None:
        clauses += " AND e.type = ?"
        params.append(query.type.value)
    if query.start is not None:
        clauses += " AND e.effective_at >= ?"
        params.append(to_micros(query.start))
    if query.end is not None:
        clauses += " AND e.effective_at <= ?"
        params.append(to_micros(query.end))
    return clauses, params


_SAVE_ACCOUNT = (
    "UPDATE members SET balance = ?, pending = ?, lifetime_earned = ?, lifetime_redeemed = ?, "
    "lifetime_deducted = ?, lifetime_expired = ?, last_seq = ?, entry_count = ? WHERE pk = ?"
)
_INSERT_ENTRY = (
    "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
    "reference, metadata, balance_after, created_at, effective_at, available_at, expires_at, "
    "posted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_LOT = (
    "INSERT INTO lots (entry_id, member_pk, seq, points, remaining, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _account_row(member_pk: int, a: Account) -> tuple[int, ...]:
    return (
        a.balance,
        a.pending,
        a.lifetime_earned,
        a.lifetime_redeemed,
        a.lifetime_deducted,
        a.lifetime_expired,
        a.last_seq,
        a.entry_count,
        member_pk,
    )


def _entry_row(e: Entry) -> tuple[Any, ...]:
    return (
        e.id,
        e.program_id,
        e.member_pk,
        e.seq,
        e.type.value,
        e.status.value,
        e.points,
        e.reason,
        e.reference,
        e.metadata,
        e.balance_after,
        to_micros(e.created_at),
        to_micros(e.effective_at),
        _opt_micros(e.available_at),
        _opt_micros(e.expires_at),
        _opt_micros(e.posted_at),
    )


def _lot_row(lot: Lot, member_pk: int) -> tuple[Any, ...]:
    expires = NEVER if lot.expires_at is None else to_micros(lot.expires_at)
    return (lot.entry_id, member_pk, lot.seq, lot.remaining, lot.remaining, expires)


_LOT_CHUNK = 32
_LOT_COLUMNS = "entry_id, remaining, expires_at, seq"


def _open_lots_query(member: str, *, after_position: bool) -> str:
    """A chunk of a member's open lots in spend order (the `lots_open` index's order)."""
    position = "AND (expires_at, seq) > (?, ?) " if after_position else ""
    return (
        f"SELECT {_LOT_COLUMNS} FROM lots WHERE member_pk = {member} AND remaining > 0 "
        f"{position}ORDER BY expires_at, seq LIMIT {_LOT_CHUNK}"
    )


_FIRST_LOTS = _open_lots_query("?", after_position=False)
_LOTS_AFTER = _open_lots_query("?", after_position=True)
_FIRST_LOTS_OF_MEMBER_ID = _open_lots_query(
    "(SELECT pk FROM members WHERE program_id = ? AND member_id = ?)", after_position=False
)


def _member_query(count: int, *, lock_suffix: str, with_expiration: bool) -> str:
    """`count` members of a program by member_id, with their program's policy and due times.

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
        f"WHERE m.program_id = ? AND m.member_id IN ({', '.join('?' * count)}) "
        f"ORDER BY m.pk{lock_suffix}"
    )


def _member_state(row: Sequence[Any], at: int, *, with_expiration: bool) -> MemberState:
    due = any(moment is not None and moment <= at for moment in row[16:18])
    soonest = row[17]
    upcoming = (
        (int(row[18]), from_micros(soonest))
        if with_expiration and soonest is not None and soonest < NEVER
        else None
    )
    return MemberState(_member(row), row[15], due, upcoming)


class SqlTx:
    """One open transaction on a DB-API style connection (see `tally.ports.Tx`)."""

    def __init__(self, conn: Connection, dialect: Dialect, *, one_statement: bool = False) -> None:
        self._conn = conn
        self._dialect = dialect
        self._sql_cache: dict[str, str] = {}
        self._statements_left: int | None = 1 if one_statement else None

    def _count_statement(self) -> None:
        if self._statements_left is None:
            return
        if self._statements_left == 0:
            raise AssertionError("a one-statement read issued a second statement")
        self._statements_left -= 1

    def _lock_suffix(self, lock: bool) -> str:
        return self._dialect.for_update_of_member if lock else ""

    def _text(self, sql: str) -> str:
        text = self._sql_cache.get(sql)
        if text is None:
            text = sql.replace("?", self._dialect.placeholder)
            self._sql_cache[sql] = text
        return text

    def _run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._count_statement()
        return self._conn.execute(self._text(sql), params)

    def _run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._count_statement()
            self._conn.cursor().executemany(self._text(sql), rows)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._run(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(self._run(sql, params).fetchall())

    # programs and keys

    def ensure_program(self, name: str, *, now: datetime) -> Program:
        self._run(
            "INSERT INTO programs (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, to_micros(now)),
        )
        row = self._one("SELECT id FROM programs WHERE name = ?", (name,))
        return self.get_program(row[0])

    def get_program(self, program_id: int) -> Program:
        row = self._one(
            "SELECT id, name, points_expire_after_days, created_at FROM programs WHERE id = ?",
            (program_id,),
        )
        return Program(row[0], row[1], row[2], from_micros(row[3]))

    def count_programs(self) -> int:
        return int(self._one("SELECT COUNT(*) FROM programs")[0])

    def set_expiry_policy(self, program_id: int, days: int | None) -> None:
        self._run(
            "UPDATE programs SET points_expire_after_days = ? WHERE id = ?", (days, program_id)
        )

    def insert_key(
        self,
        *,
        key_id: str,
        program_id: int,
        scope: str,
        secret_hash: str,
        prefix: str,
        now: datetime,
    ) -> None:
        self._run(
            "INSERT INTO api_keys (id, program_id, scope, secret_hash, prefix, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, program_id, scope, secret_hash, prefix, to_micros(now)),
        )

    def find_key(self, secret_hash: str) -> KeyRecord | None:
        row = self._one(
            "SELECT id, program_id, scope, revoked_at FROM api_keys WHERE secret_hash = ?",
            (secret_hash,),
        )
        return None if row is None else KeyRecord(row[0], row[1], row[2], row[3] is not None)

    def list_keys(self) -> list[ApiKey]:
        rows = self._all(
            "SELECT k.id, k.program_id, p.name, k.scope, k.prefix, k.created_at, k.revoked_at "
            "FROM api_keys k JOIN programs p ON p.id = k.program_id ORDER BY k.id"
        )
        return [
            ApiKey(r[0], r[1], r[2], Scope(r[3]), r[4], from_micros(r[5]), _opt_time(r[6]))
            for r in rows
        ]

    def revoke_key(self, key_id: str, *, now: datetime) -> bool:
        row = self._one(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING id",
            (to_micros(now), key_id),
        )
        return row is not None

    # idempotency

    def claim_idempotency_key(self, program_id: int, key: str) -> bool:
        return self._dialect.claim_key(self._conn, program_id, key)

    def get_reply(self, program_id: int, key: str) -> StoredReply | None:
        row = self._one(
            "SELECT fingerprint, status, body FROM idempotency_keys "
            "WHERE program_id = ? AND key = ?",
            (program_id, key),
        )
        return None if row is None else StoredReply(row[0], row[1], bytes(row[2]))

    def put_reply(self, program_id: int, key: str, reply: StoredReply, *, now: datetime) -> None:
        self._run(
            "INSERT INTO idempotency_keys (program_id, key, fingerprint, status, body, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (program_id, key, reply.fingerprint, reply.status, reply.body, to_micros(now)),
        )

    def purge_replies(self, *, before: datetime) -> int:
        rows = self._all(
            "DELETE FROM idempotency_keys WHERE created_at < ? RETURNING key",
            (to_micros(before),),
        )
        return len(rows)

    # members

    def insert_member(self, program_id: int, profile: Profile, *, now: datetime) -> bool:
        row = self._one(
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

    def get_member(self, program_id: int, member_id: str) -> Member | None:
        row = self._one(
            f"SELECT {_MEMBER_COLUMNS} FROM members WHERE program_id = ? AND member_id = ?",
            (program_id, member_id),
        )
        return None if row is None else _member(row)

    def list_members(self, program_id: int, *, offset: int, limit: int) -> list[Member]:
        rows = self._all(
            f"SELECT {_MEMBER_COLUMNS} FROM members WHERE program_id = ? ORDER BY pk "
            "LIMIT ? OFFSET ?",
            (program_id, limit, offset),
        )
        return [_member(r) for r in rows]

    def count_members(self, program_id: int) -> int:
        return int(self._one("SELECT COUNT(*) FROM members WHERE program_id = ?", (program_id,))[0])

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
        query = _member_query(
            1, lock_suffix=self._lock_suffix(lock), with_expiration=with_expiration
        )
        found = self._run(query, (program_id, member_id))
        at = to_micros(now)
        if spending is None:
            rows = list(found.fetchall())
            return _member_state(rows[0], at, with_expiration=with_expiration) if rows else None
        # A spend's first lots go out right behind the member's statement and come back with it
        # (one round trip on PostgreSQL's pipeline). They are read once the member's row is
        # locked, so they are the lots as the lock's previous holder left them.
        lots = self._run(_FIRST_LOTS_OF_MEMBER_ID, (program_id, member_id))
        rows, first_lots = list(found.fetchall()), list(lots.fetchall())
        if not rows:
            return None
        state = _member_state(rows[0], at, with_expiration=with_expiration)
        spend_lots = self._covering_lots(state.member.pk, spending, first_lots)
        return replace(state, spend_lots=spend_lots)

    def member_states(
        self,
        program_id: int,
        member_ids: list[str],
        *,
        now: datetime,
        lock: bool,
        with_expiration: bool = False,
    ) -> dict[str, MemberState]:
        at = to_micros(now)
        states: dict[str, MemberState] = {}
        for start in range(0, len(member_ids), 500):  # one round trip per 500 members
            chunk = member_ids[start : start + 500]
            rows = self._all(
                _member_query(
                    len(chunk), lock_suffix=self._lock_suffix(lock), with_expiration=with_expiration
                ),
                (program_id, *chunk),
            )
            for row in rows:
                states[row[2]] = _member_state(row, at, with_expiration=with_expiration)
        return states

    def save_account(self, member_pk: int, account: Account) -> None:
        self._run(_SAVE_ACCOUNT, _account_row(member_pk, account))

    def save_accounts(self, accounts: dict[int, Account]) -> None:
        self._run_many(_SAVE_ACCOUNT, [_account_row(pk, a) for pk, a in accounts.items()])

    # ledger entries

    def insert_entry(self, entry: Entry) -> None:
        self._run(_INSERT_ENTRY, _entry_row(entry))

    def insert_entries(self, entries: list[Entry]) -> None:
        self._run_many(_INSERT_ENTRY, [_entry_row(e) for e in entries])

    def post_pending(
        self, entry_id: str, *, seq: int, balance_after: int, posted_at: datetime
    ) -> None:
        at = to_micros(posted_at)
        self._run(
            "UPDATE entries SET status = 'posted', seq = ?, balance_after = ?, posted_at = ?, "
            "effective_at = ? WHERE id = ? AND status = 'pending'",
            (seq, balance_after, at, at, entry_id),
        )

    def cancel_pending(self, entry_id: str) -> None:
        self._run(
            "UPDATE entries SET status = 'cancelled' WHERE id = ? AND status = 'pending'",
            (entry_id,),
        )

    def get_entry(self, program_id: int, entry_id: str) -> Entry | None:
        row = self._one(
            f"SELECT {_ENTRY_COLUMNS}, m.member_id FROM entries e "
            "JOIN members m ON m.pk = e.member_pk WHERE e.id = ? AND e.program_id = ?",
            (entry_id, program_id),
        )
        return None if row is None else _entry(row, row[15])

    def list_entries(
        self, member: Member, query: HistoryQuery, *, offset: int, limit: int, newest_first: bool
    ) -> list[Entry]:
        clauses, params = _history_filter(query)
        order = "DESC" if newest_first else "ASC"
        rows = self._all(
            f"SELECT {_ENTRY_COLUMNS} FROM entries e WHERE e.member_pk = ?{clauses} "
            f"ORDER BY e.seq {order} LIMIT ? OFFSET ?",
            (member.pk, *params, limit, offset),
        )
        return [_entry(r, member.member_id) for r in rows]

    def count_entries(self, member: Member, query: HistoryQuery) -> int:
        clauses, params = _history_filter(query)
        row = self._one(
            f"SELECT COUNT(*) FROM entries e WHERE e.member_pk = ?{clauses}",
            (member.pk, *params),
        )
        return int(row[0])

    def pending_awards(self, member_pk: int, *, due_by: datetime | None = None) -> list[Entry]:
        limit = NEVER if due_by is None else to_micros(due_by)
        rows = self._all(
            f"SELECT {_ENTRY_COLUMNS}, m.member_id FROM entries e "
            "JOIN members m ON m.pk = e.member_pk "
            "WHERE e.member_pk = ? AND e.status = 'pending' AND e.available_at <= ? "
            "ORDER BY e.available_at, e.seq",
            (member_pk, limit),
        )
        return [_entry(r, r[15]) for r in rows]

    # lots

    def insert_lot(self, lot: Lot, *, member_pk: int) -> None:
        self._run(_INSERT_LOT, _lot_row(lot, member_pk))

    def insert_lots(self, lots: list[tuple[Lot, int]]) -> None:
        self._run_many(_INSERT_LOT, [_lot_row(lot, pk) for lot, pk in lots])

    def open_lots(
        self, member_pk: int, *, expiring_by: datetime | None = None, covering: int | None = None
    ) -> list[Lot]:
        if covering is None:
            limit = NEVER if expiring_by is None else to_micros(expiring_by)
            rows = self._all(
                f"SELECT {_LOT_COLUMNS} FROM lots WHERE member_pk = ? "
                "AND remaining > 0 AND expires_at <= ? ORDER BY expires_at, seq",
                (member_pk, limit),
            )
            return [_lot(r) for r in rows]
        return self._covering_lots(member_pk, covering)

    def _covering_lots(
        self, member_pk: int, covering: int, first: list[Any] | None = None
    ) -> list[Lot]:
        """Open lots in spend order, a chunk at a time, until they cover `covering` points (all
        of them if they don't), so a member with thousands of open lots costs a spend no more
        than the lots it draws on. `first`: the first chunk's rows, when already read."""
        if covering <= 0:
            return []
        rows = self._all(_FIRST_LOTS, (member_pk,)) if first is None else first
        lots: list[Lot] = []
        total = 0
        while True:
            lots += [_lot(r) for r in rows]
            total += sum(r[1] for r in rows)
            if total >= covering or len(rows) < _LOT_CHUNK:
                return lots
            rows = self._all(_LOTS_AFTER, (member_pk, rows[-1][2], rows[-1][3]))

    def set_remaining(self, lot_id: str, remaining: int) -> None:
        self._run("UPDATE lots SET remaining = ? WHERE entry_id = ?", (remaining, lot_id))

    def insert_draws(self, spend_id: str, draws: list[Draw]) -> None:
        for draw in draws:
            self._run(
                "INSERT INTO draws (spend_id, lot_id, points) VALUES (?, ?, ?)",
                (spend_id, draw.lot_id, draw.points),
            )

    def members_with_due_work(self, *, now: datetime, limit: int) -> list[tuple[int, str]]:
        at = to_micros(now)
        rows = self._all(
            "SELECT program_id, member_id FROM members WHERE pk IN ("
            "SELECT member_pk FROM entries WHERE status = 'pending' AND available_at <= ? "
            "UNION SELECT member_pk FROM lots WHERE remaining > 0 AND expires_at <= ?) "
            "ORDER BY pk LIMIT ?",
            (at, at, limit),
        )
        return [(r[0], r[1]) for r in rows]

    # rewards and redemptions

    def insert_reward(self, reward: Reward) -> None:
        self._run(
            f"INSERT INTO rewards ({_REWARD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                reward.id,
                reward.program_id,
                reward.name,
                reward.points_cost,
                reward.stock,
                reward.active,
                reward.metadata,
                to_micros(reward.created_at),
            ),
        )

    def get_reward(self, program_id: int, reward_id: str, *, lock: bool = False) -> Reward | None:
        suffix = self._dialect.for_update if lock else ""
        row = self._one(
            f"SELECT {_REWARD_COLUMNS} FROM rewards WHERE id = ? AND program_id = ?{suffix}",
            (reward_id, program_id),
        )
        return None if row is None else _reward(row)

    def list_rewards(self, program_id: int, *, offset: int, limit: int) -> list[Reward]:
        rows = self._all(
            f"SELECT {_REWARD_COLUMNS} FROM rewards WHERE program_id = ? "
            "ORDER BY created_at, id LIMIT ? OFFSET ?",
            (program_id, limit, offset),
        )
        return [_reward(r) for r in rows]

    def count_rewards(self, program_id: int) -> int:
        return int(self._one("SELECT COUNT(*) FROM rewards WHERE program_id = ?", (program_id,))[0])

    def update_reward(self, reward: Reward) -> None:
        self._run(
            "UPDATE rewards SET name = ?, points_cost = ?, stock = ?, active = ?, metadata = ? "
            "WHERE id = ?",
            (
                reward.name,
                reward.points_cost,
                reward.stock,
                reward.active,
                reward.metadata,
                reward.id,
            ),
        )

    def insert_redemption(self, redemption: Redemption) -> None:
        self._run(
            "INSERT INTO redemptions (id, program_id, member_pk, reward_id, quantity, points, "
            "status, transaction_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                redemption.id,
                redemption.program_id,
                redemption.member_pk,
                redemption.reward_id,
                redemption.quantity,
                redemption.points,
                redemption.status.value,
                redemption.transaction_id,
                to_micros(redemption.created_at),
            ),
        )

    def get_redemption(
        self, program_id: int, redemption_id: str, *, lock: bool = False
    ) -> Redemption | None:
        suffix = self._dialect.for_update if lock else ""
        row = self._one(
            f"SELECT {_REDEMPTION_COLUMNS} FROM redemptions r JOIN members m ON m.pk = r.member_pk "
            f"WHERE r.id = ? AND r.program_id = ?{suffix}",
            (redemption_id, program_id),
        )
        return None if row is None else _redemption(row)

    def list_redemptions(self, member: Member, *, offset: int, limit: int) -> list[Redemption]:
        rows = self._all(
            f"SELECT {_REDEMPTION_COLUMNS} FROM redemptions r JOIN members m ON m.pk = r.member_pk "
            "WHERE r.member_pk = ? ORDER BY r.created_at DESC, r.id DESC LIMIT ? OFFSET ?",
            (member.pk, limit, offset),
        )
        return [_redemption(r) for r in rows]

    def count_redemptions(self, member: Member) -> int:
        row = self._one("SELECT COUNT(*) FROM redemptions WHERE member_pk = ?", (member.pk,))
        return int(row[0])

    def cancel_redemption(self, redemption_id: str, *, refund_id: str, now: datetime) -> None:
        self._run(
            "UPDATE redemptions SET status = 'cancelled', refund_transaction_id = ?, "
            "cancelled_at = ? WHERE id = ?",
            (refund_id, to_micros(now), redemption_id),
        )

    # verification

    def ledger_checks(self) -> Iterator[LedgerCheck]:
        members = [
            _member(r) for r in self._all(f"SELECT {_MEMBER_COLUMNS} FROM members ORDER BY pk")
        ]
        for member in members:
            groups = self._all(
                "SELECT type, status, COUNT(*), SUM(points) FROM entries WHERE member_pk = ? "
                "GROUP BY type, status",
                (member.pk,),
            )
            # The balance_after chain, checked in the database so no history is held in memory.
            breaks = self._all(
                "SELECT id, balance_after, running FROM (SELECT id, balance_after, seq, "
                "SUM(points) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) AS running "
                "FROM entries WHERE member_pk = ? AND status = 'posted') chain "
                "WHERE balance_after IS NULL OR balance_after <> running ORDER BY seq LIMIT 20",
                (member.pk,),
            )
            lots = self._one(
                "SELECT COALESCE(SUM(remaining), 0) FROM lots WHERE member_pk = ? "
                "AND remaining > 0",  # the same sum, read from the partial index lots_open
                (member.pk,),
            )
            posted = EntryStatus.POSTED.value
            yield LedgerCheck(
                member=member,
                posted_sums={g[0]: int(g[3]) for g in groups if g[1] == posted},
                pending_total=sum(int(g[3]) for g in groups if g[1] == EntryStatus.PENDING.value),
                entry_count=sum(int(g[2]) for g in groups),
                open_lot_total=int(lots[0]),
                chain_breaks=[(b[0], b[1], int(b[2])) for b in breaks],
            )

    def unbalanced_spends(self) -> list[tuple[str, int, int]]:
        """(entry id, points it should account for, points its draws account for) that differ.

        Covers spends (whose draws must add up to their points) and lots (whose draws plus
        remainder must add up to the lot's points).
        """
        spends = self._all(
            "SELECT e.id, -e.points, COALESCE(SUM(d.points), 0) FROM entries e "
            "LEFT JOIN draws d ON d.spend_id = e.id "
            "WHERE e.type IN ('deduct', 'redeem', 'expire') "
            "GROUP BY e.id, e.points HAVING COALESCE(SUM(d.points), 0) <> -e.points"
        )
        lots = self._all(
            "SELECT l.entry_id, l.points, l.remaining + COALESCE(SUM(d.points), 0) FROM lots l "
            "LEFT JOIN draws d ON d.lot_id = l.entry_id "
            "GROUP BY l.entry_id, l.points, l.remaining "
            "HAVING l.remaining + COALESCE(SUM(d.points), 0) <> l.points"
        )
        return [(r[0], int(r[1]), int(r[2])) for r in spends + lots]
