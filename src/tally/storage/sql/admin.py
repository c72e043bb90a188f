"""Administration and idempotency in SQL: `ProgramRows`, `KeyRows` and `ReplyRows`."""

from __future__ import annotations

from datetime import datetime

from tally.domain import ApiKey, Program, Scope
from tally.ports import KeyRecord, StoredReply
from tally.storage.sql.rows import from_micros, opt_time, to_micros
from tally.storage.sql.session import Session


class SqlPrograms:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def ensure(self, name: str, *, now: datetime) -> Program:
        self._s.run(
            "INSERT INTO programs (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            (name, to_micros(now)),
        )
        row = self._s.one("SELECT id FROM programs WHERE name = ?", (name,))
        return self.get(row[0])

    def get(self, program_id: int) -> Program:
        row = self._s.one(
            "SELECT id, name, points_expire_after_days, created_at, enrol_on_award "
            "FROM programs WHERE id = ?",
            (program_id,),
        )
        return Program(row[0], row[1], row[2], from_micros(row[3]), enrol_on_award=bool(row[4]))

    def count(self) -> int:
        return int(self._s.one("SELECT COUNT(*) FROM programs")[0])

    def find(self, name: str) -> Program | None:
        row = self._s.one("SELECT id FROM programs WHERE name = ?", (name,))
        return None if row is None else self.get(row[0])

    def names(self) -> list[str]:
        return [row[0] for row in self._s.all("SELECT name FROM programs ORDER BY name", ())]

    def set_expiry_policy(self, program_id: int, days: int | None) -> None:
        self._s.run(
            "UPDATE programs SET points_expire_after_days = ? WHERE id = ?", (days, program_id)
        )

    def set_enrol_on_award(self, program_id: int, enabled: bool) -> None:
        self._s.run("UPDATE programs SET enrol_on_award = ? WHERE id = ?", (enabled, program_id))

    def enrols_on_award(self, program_id: int) -> bool:
        row = self._s.one("SELECT enrol_on_award FROM programs WHERE id = ?", (program_id,))
        return row is not None and bool(row[0])


class SqlKeys:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def insert(
        self,
        *,
        key_id: str,
        program_id: int,
        scope: str,
        secret_hash: str,
        prefix: str,
        now: datetime,
    ) -> None:
        self._s.run(
            "INSERT INTO api_keys (id, program_id, scope, secret_hash, prefix, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key_id, program_id, scope, secret_hash, prefix, to_micros(now)),
        )

    def find(self, secret_hash: str) -> KeyRecord | None:
        row = self._s.one(
            "SELECT id, program_id, scope, revoked_at FROM api_keys WHERE secret_hash = ?",
            (secret_hash,),
        )
        return None if row is None else KeyRecord(row[0], row[1], row[2], row[3] is not None)

    def all(self) -> list[ApiKey]:
        found = self._s.all(
            "SELECT k.id, k.program_id, p.name, k.scope, k.prefix, k.created_at, k.revoked_at "
            "FROM api_keys k JOIN programs p ON p.id = k.program_id ORDER BY k.id"
        )
        return [
            ApiKey(r[0], r[1], r[2], Scope(r[3]), r[4], from_micros(r[5]), opt_time(r[6]))
            for r in found
        ]

    def revoke(self, key_id: str, *, now: datetime) -> bool:
        row = self._s.one(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING id",
            (to_micros(now), key_id),
        )
        return row is not None


class SqlReplies:
    __slots__ = ("_s",)

    def __init__(self, session: Session) -> None:
        self._s = session

    def claim(self, program_id: int, key: str) -> bool:
        return self._s.dialect.claim_key(self._s.conn, program_id, key)

    def get(self, program_id: int, key: str) -> StoredReply | None:
        row = self._s.one(
            "SELECT fingerprint, status, body FROM idempotency_keys "
            "WHERE program_id = ? AND key = ?",
            (program_id, key),
        )
        return None if row is None else StoredReply(row[0], row[1], bytes(row[2]))

    def claim_many(self, program_id: int, keys: list[str]) -> bool:
        return not keys or self._s.dialect.claim_keys(self._s.conn, program_id, keys)

    def get_range(self, program_id: int, first: str, last: str) -> dict[str, StoredReply]:
        found = self._s.all(
            "SELECT key, fingerprint, status, body FROM idempotency_keys "
            "WHERE program_id = ? AND key >= ? AND key <= ?",
            (program_id, first, last),
        )
        return {row[0]: StoredReply(row[1], row[2], bytes(row[3])) for row in found}

    def put(self, program_id: int, key: str, reply: StoredReply, *, now: datetime) -> None:
        self._s.run(_INSERT_REPLY, _reply_row(program_id, key, reply, now))

    def put_many(self, program_id: int, replies: dict[str, StoredReply], *, now: datetime) -> None:
        self._s.run_many(
            _INSERT_REPLY, [_reply_row(program_id, k, r, now) for k, r in replies.items()]
        )

    def purge(self, *, before: datetime, keep_prefix: str | None = None) -> int:
        if keep_prefix is None:
            found = self._s.all(
                "DELETE FROM idempotency_keys WHERE created_at < ? RETURNING key",
                (to_micros(before),),
            )
        else:
            found = self._s.all(
                "DELETE FROM idempotency_keys WHERE created_at < ? "
                "AND substr(key, 1, ?) <> ? RETURNING key",
                (to_micros(before), len(keep_prefix), keep_prefix),
            )
        return len(found)

    def containing(self, program_id: int, text: bytes) -> dict[str, bytes]:
        contains = self._s.dialect.bytes_contain.format(column="body")
        found = self._s.all(
            f"SELECT key, body FROM idempotency_keys WHERE program_id = ? AND {contains}",
            (program_id, text),
        )
        return {row[0]: bytes(row[1]) for row in found}

    def rewrite(self, program_id: int, key: str, body: bytes) -> None:
        self._s.run(
            "UPDATE idempotency_keys SET body = ? WHERE program_id = ? AND key = ?",
            (body, program_id, key),
        )


_INSERT_REPLY = (
    "INSERT INTO idempotency_keys (program_id, key, fingerprint, status, body, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _reply_row(
    program_id: int, key: str, reply: StoredReply, now: datetime
) -> tuple[int, str, str, int, bytes, int]:
    return (program_id, key, reply.fingerprint, reply.status, reply.body, to_micros(now))
