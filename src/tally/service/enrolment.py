"""Enrol on award (api.md section 9): when the program says so (`PATCH /v1/program
{"enrol_on_award": true}`), an award, a bulk item or a transfer to a member id the program does
not have enrols that member in the same transaction, with its `member.created` event.

Only a miss costs anything: the program's setting is read when a member is not found, never on
the way of an award to a known member. Writing the award is still `points`' and `transfers'`
job; this module only makes sure the member is there, or lets `MemberNotFound` stand.
"""

from __future__ import annotations

from datetime import datetime

from tally.commands import BulkCommand, BulkItemError
from tally.domain import Account, Member, Profile
from tally.errors import MemberNotFound, TallyError
from tally.ports import MemberState, Tx
from tally.rules import points as rules
from tally.service import accounts, outbox


def enrol_unknown(tx: Tx, program_id: int, member_ids: list[str], now: datetime) -> bool:
    """Enrol those of `member_ids` the program does not have, if it enrols on award; False,
    enrolling nobody, if it does not.

    Ids go in sorted order, so two requests enrolling overlapping ids wait for one another
    rather than deadlock. One that a concurrent request enrolled first is simply used (the
    insert finds it and does nothing): the member is made once, with one `member.created`.
    """
    if not tx.programs.enrols_on_award(program_id):
        return False
    for member_id in sorted(set(member_ids)):
        if tx.members.insert(program_id, Profile(member_id), now=now):
            member = tx.members.get(program_id, member_id)
            assert member is not None
            outbox.member_created(tx, member, now)
    return True


def locked_member(tx: Tx, program_id: int, member_id: str, now: datetime) -> MemberState:
    """`accounts.locked_member`, enrolling the member first if the program has no such member
    and enrols on award."""
    try:
        return accounts.locked_member(tx, program_id, member_id, now)
    except MemberNotFound:
        if not enrol_unknown(tx, program_id, [member_id], now):
            raise
    return accounts.locked_member(tx, program_id, member_id, now)


def locked_receiver(
    tx: Tx, program_id: int, member_id: str, states: dict[str, MemberState], now: datetime
) -> dict[str, MemberState]:
    """`states` (members already locked) with the transfer's receiver `member_id` in it,
    enrolled if it was missing and the program enrols on award."""
    if member_id in states or not enrol_unknown(tx, program_id, [member_id], now):
        return states
    return {**states, **accounts.locked_members(tx, program_id, [member_id], now)}


def locked_for_bulk(
    tx: Tx, program_id: int, cmd: BulkCommand, now: datetime
) -> dict[str, MemberState]:
    """The members a bulk award names, locked, with the unknown ones enrolled when the program
    enrols on award: only those with at least one item that will apply, so an item that fails
    (alone, the others applying) leaves no member behind."""
    named = list({i.member_id: None for i in cmd.items if not isinstance(i, BulkItemError)})
    states = accounts.locked_members(tx, program_id, named, now)
    missing = [member_id for member_id in named if member_id not in states]
    if not missing:
        return states
    program = tx.programs.get(program_id)
    if not program.enrol_on_award:
        return states
    # A dry run with the unknown members as they would be enrolled: which of them get points.
    members = {member_id: state.member for member_id, state in states.items()}
    members |= {member_id: newcomer(program_id, member_id, now) for member_id in missing}
    try:
        planned = rules.plan_bulk(
            cmd,
            members,
            expire_after_days=program.points_expire_after_days,
            now=now,
            created_by="",
        )
    except TallyError:  # an atomic bulk that will be refused: enrol no one
        return states
    awarded = {posting.entry.member_id for _, posting in planned.postings}
    enrolled = [member_id for member_id in missing if member_id in awarded]
    if enrolled and enrol_unknown(tx, program_id, enrolled, now):
        states |= accounts.locked_members(tx, program_id, enrolled, now)
    return states


def newcomer(program_id: int, member_id: str, now: datetime) -> Member:
    """A member as enrolment makes it: no profile but its id, no points (pk 0: not stored)."""
    return Member(
        pk=0, program_id=program_id, profile=Profile(member_id), account=Account(), created_at=now
    )
