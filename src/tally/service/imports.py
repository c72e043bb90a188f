"""Importing an awards file: every row checked first, then applied in batches, each row once.

A file is accepted whole or refused whole: every row is checked (read, in batches, changing
nothing) before any is applied, and one bad row refuses the file with each bad row's error.
Accepted, its rows are awarded `APPLY_BATCH` at a time, each batch one transaction through the
same rule and write path as a bulk award (`rules.plan_bulk`, `accounts.write_awards`). Each row
carries an Idempotency-Key derived from the file and its line; its reply (the transaction id)
is stored with the award, so a run cut short and run again, or the same file imported twice,
replays the rows already awarded instead of awarding them again. Those replies keep their
`IMPORT_KEY_PREFIX` and are never purged (`lifecycle.sweep`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from tally.commands import (
    AwardCommand,
    BulkCommand,
    Clock,
    Idempotency,
    ImportCommand,
    ImportOutcome,
    KeyedAward,
    Posting,
    Reply,
    RowError,
    RowResult,
    RowStatus,
)
from tally.errors import Detail, IdempotencyInProgress, IdempotencyKeyReused, TallyError
from tally.ports import MemberState, StoredReply, Tx
from tally.rules import points as rules
from tally.service import accounts, enrolment
from tally.service.runner import Render, Runner

IMPORT_KEY_PREFIX = "csv-"
"""Keys of imported rows start with this; the sweep keeps their replies for good."""
CHECK_BATCH = 2_000  # rows per read while checking
APPLY_BATCH = 1_000  # rows per transaction while applying


class _Refused(Exception):
    """Rows of a batch found bad while applying it: the batch's transaction is rolled back."""

    def __init__(self, failures: list[RowResult]) -> None:
        super().__init__(f"{len(failures)} row(s) refused")
        self.failures = failures


class Imports:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def award_file(
        self, program_id: int, cmd: ImportCommand, *, created_by: str
    ) -> ImportOutcome:
        """Check every row, then apply them all, or none if any row is bad; the awards name
        `created_by` (the uploading key, or `COMMAND_LINE`) as their maker."""
        awards = [row for row in cmd.rows if isinstance(row, KeyedAward)]
        bad = {row.line: _error_of(row) for row in cmd.rows if isinstance(row, RowError)}
        for batch in _batches(awards, CHECK_BATCH):
            work = partial(_check, program_id=program_id, batch=batch, now=self._runner.clock())
            for failure in await self._runner.store.read(work):
                bad[failure.line] = failure
        if bad:
            return ImportOutcome([bad.get(row.line) or _skipped(row) for row in cmd.rows])
        results: list[RowResult] = []
        for batch in _batches(awards, APPLY_BATCH):
            apply = partial(
                _apply,
                program_id=program_id,
                batch=batch,
                clock=self._runner.clock,
                created_by=created_by,
            )
            try:
                results += await self._runner.write(apply, in_thread=True)
            except _Refused as refused:
                # A row that passed the check went bad before its batch ran (the check and each
                # batch are transactions of their own): the batches before it stay applied, and
                # running the same file again replays them and retries the rest.
                failed = {f.line: f for f in refused.failures}
                rest = awards[len(results) :]
                results += [failed.get(row.line) or _skipped(row) for row in rest]
                break
        return ImportOutcome(results)

    async def award_file_once(
        self,
        program_id: int,
        cmd: ImportCommand,
        *,
        created_by: str,
        idempotency: Idempotency | None,
        render: Render[ImportOutcome],
    ) -> Reply:
        """`award_file` under a request's Idempotency-Key: the same request again gets the
        first answer back, another request with the key is refused.

        The rows are idempotent by their own keys, so the import itself needs no transaction
        around it: its answer is stored once it is done. Cut off in between, a retry imports
        again (every row replayed) and stores that answer.
        """
        if idempotency is not None:
            stored = await self._runner.store.read(
                lambda tx: tx.replies.get(program_id, idempotency.key)
            )
            if stored is not None and stored.fingerprint == idempotency.fingerprint:
                return Reply(stored.status, stored.body, replayed=True)
            if stored is not None:
                raise IdempotencyKeyReused(
                    f"Idempotency-Key {idempotency.key!r} was already used for a different request."
                )
        outcome = await self.award_file(program_id, cmd, created_by=created_by)
        return await self._runner.change(program_id, idempotency, lambda tx, now: outcome, render)


CHECKING = "check"  # the maker of rows that are only checked, never written


def _check(tx: Tx, *, program_id: int, batch: list[KeyedAward], now: datetime) -> list[RowResult]:
    """The rows of `batch` that could not be applied now, with why; changes nothing."""
    fresh, failures = _unreplayed(tx, program_id, batch)
    states = _members(tx, program_id, fresh, now, lock=False)
    return failures + _plan(fresh, states, now, created_by=CHECKING).failures


def _apply(
    tx: Tx, *, program_id: int, batch: list[KeyedAward], clock: Clock, created_by: str
) -> list[RowResult]:
    """Award every row of `batch` not awarded yet, in one transaction; raises `_Refused` (and
    applies none) if any cannot be."""
    now = clock()
    if not tx.replies.claim_many(program_id, [row.key for row in batch]):
        raise IdempotencyInProgress(
            "Another import of this file is applying the same rows right now; run it again "
            "once that one has finished (its rows will be replayed)."
        )
    stored = _replies(tx, program_id, batch)
    fresh, failures = _unreplayed(tx, program_id, batch, stored=stored)
    states = _members(tx, program_id, fresh, now, lock=True)
    plan = _plan(fresh, states, now, created_by=created_by)
    if failures or plan.failures:
        raise _Refused(failures + plan.failures)
    accounts.write_awards(tx, [posting for _, posting in plan.postings], now)
    tx.replies.put_many(
        program_id,
        {
            row.key: StoredReply(fingerprint(row.award), 201, posting.entry.id.encode())
            for row, posting in plan.postings
        },
        now=now,
    )
    awarded = {row.line: posting.entry.id for row, posting in plan.postings}
    return [
        RowResult(row.line, row.award.member_id, RowStatus.OK, awarded[row.line])
        if row.line in awarded
        else RowResult(
            row.line, row.award.member_id, RowStatus.REPLAYED, stored[row.key].body.decode()
        )
        for row in batch
    ]


def _unreplayed(
    tx: Tx,
    program_id: int,
    batch: list[KeyedAward],
    *,
    stored: dict[str, StoredReply] | None = None,
) -> tuple[list[KeyedAward], list[RowResult]]:
    """The rows not awarded yet, and those whose key holds the reply of a different row."""
    if stored is None:
        stored = _replies(tx, program_id, batch)
    fresh: list[KeyedAward] = []
    failures: list[RowResult] = []
    for row in batch:
        reply = stored.get(row.key)
        if reply is None:
            fresh.append(row)
        elif reply.fingerprint != fingerprint(row.award):
            error = IdempotencyKeyReused(
                f"Line {row.line}: its key {row.key!r} was already used for a different award."
            )
            failures.append(RowResult(row.line, row.award.member_id, RowStatus.ERROR, None, error))
    return fresh, failures


def _replies(tx: Tx, program_id: int, batch: list[KeyedAward]) -> dict[str, StoredReply]:
    """The replies stored under the keys of `batch`, read as one range of keys: a file's keys
    sort in line order (`row_key`), and a batch is consecutive rows."""
    found = tx.replies.get_range(program_id, batch[0].key, batch[-1].key)
    return {row.key: found[row.key] for row in batch if row.key in found}


def row_key(digest: str, line: int) -> str:
    """The Idempotency-Key of line `line` of the file whose SHA-256 starts with `digest`: the
    line zero-padded, so that a file's keys sort in line order."""
    return f"{IMPORT_KEY_PREFIX}{digest}-{line:010d}"


def _members(
    tx: Tx, program_id: int, rows: list[KeyedAward], now: datetime, *, lock: bool
) -> dict[str, MemberState]:
    """The members the rows name (locked and up to date when applying).

    A member that does not exist fails its row (`member_not_found`, from the bulk rule), as in
    a bulk award, unless the program enrols on award: then the check counts it as a newcomer,
    and applying enrols it (with its `member.created`) exactly as a bulk award does.
    """
    if lock:
        return enrolment.locked_for_bulk(tx, program_id, BulkCommand([r.award for r in rows]), now)
    named = list(dict.fromkeys(row.award.member_id for row in rows))
    states = tx.members.states(program_id, named, now=now, lock=False)
    missing = [member_id for member_id in named if member_id not in states]
    if missing and tx.programs.enrols_on_award(program_id):
        policy = tx.programs.get(program_id).points_expire_after_days
        newcomers = {m: enrolment.newcomer(program_id, m, now) for m in missing}
        states |= {m: MemberState(member, policy, due=False) for m, member in newcomers.items()}
    return states


@dataclass(frozen=True, slots=True)
class _Plan:
    postings: list[tuple[KeyedAward, Posting]]
    failures: list[RowResult]


def _plan(
    rows: list[KeyedAward], states: dict[str, MemberState], now: datetime, *, created_by: str
) -> _Plan:
    """The bulk award's rule over the rows: each planned on top of the earlier ones."""
    # Every member of one program shares its expiry policy.
    policy = next((s.expire_after_days for s in states.values()), None)
    members = {member_id: state.member for member_id, state in states.items()}
    outcome = rules.plan_bulk(
        BulkCommand([row.award for row in rows]),
        members,
        expire_after_days=policy,
        now=now,
        created_by=created_by,
    )
    return _Plan(
        [(rows[index], posting) for index, posting in outcome.postings],
        [
            RowResult(
                rows[f.index].line,
                f.member_id,
                RowStatus.ERROR,
                None,
                _of_row(f.error, f.index),
            )
            for f in outcome.failures
        ],
    )


def _of_row(error: TallyError, index: int) -> TallyError:
    """A bulk item's error with its fields named as the file's columns (`points`, not
    `awards[3].points`)."""
    prefix = f"awards[{index}]."
    details = [
        Detail(d.message, None if d.field is None else d.field.removeprefix(prefix), d.extra)
        for d in error.details
    ]
    return type(error)(error.message.replace(prefix, ""), details=details)


def fingerprint(award: AwardCommand) -> str:
    """What a row's reply is kept with: the same key with a different award is refused."""
    parts = (
        "award",
        award.member_id,
        award.points,
        award.reason,
        award.reference,
        award.metadata,
        None if award.available_at is None else award.available_at.isoformat(),
        None if award.expires_at is None else award.expires_at.isoformat(),
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _error_of(row: RowError) -> RowResult:
    return RowResult(row.line, row.member_id, RowStatus.ERROR, None, row.error)


def _skipped(row: KeyedAward | RowError) -> RowResult:
    member_id = row.award.member_id if isinstance(row, KeyedAward) else row.member_id
    return RowResult(row.line, member_id, RowStatus.SKIPPED)


def _batches(rows: list[KeyedAward], size: int) -> list[list[KeyedAward]]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]
