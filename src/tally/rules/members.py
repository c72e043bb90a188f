"""What a member's profile may become: updated while it has personal data, erased for good.

Erasure (api.md section 9) removes the member's personal data — `email`, `name`, the member's
`metadata` and the `metadata` of its transactions — wherever Tally keeps a copy: the rows, the
events' `data` and the answers stored under Idempotency-Keys. The ledger itself stays (ids,
points, reasons, references, balances). Pure functions; `tally.service.erasure` writes them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import msgspec

from tally.commands import MemberChanges
from tally.domain import Member, Profile
from tally.errors import MemberErased

PERSONAL_FIELDS = ("email", "name", "metadata")
"""The fields of a member (`email`, `name`, `metadata`) and of a transaction (`metadata`) that
erasure empties, in any JSON object that is that member or one of its transactions."""


def check_changeable(member: Member) -> None:
    """An erased member's profile stays empty: it cannot be given personal data again."""
    if member.erased_at is not None:
        raise MemberErased(
            f"Member {member.member_id}'s personal data was erased; its profile cannot change."
        )


def changed_profile(member: Member, changes: MemberChanges) -> Profile:
    """The member's profile with the fields `changes` names replaced."""
    check_changeable(member)
    profile = member.profile
    if changes.email_set:
        profile = replace(profile, email=changes.email)
    if changes.name_set:
        profile = replace(profile, name=changes.name)
    if changes.metadata_set:
        profile = replace(profile, metadata=changes.metadata)
    return profile


def erased(member: Member, *, now: datetime) -> Member:
    """The member without personal data; erased at `now`, or when it first was."""
    return replace(member, profile=Profile(member.member_id), erased_at=member.erased_at or now)


def mentions(member_id: str) -> str:
    """The text any JSON object of the member (or of one of its transactions) holds, as Tally
    writes it (compact, and member ids need no escaping): a cheap first filter."""
    return f'"member_id":"{member_id}"'


def without_personal_data(text: bytes | str, member_id: str) -> bytes | None:
    """`text` (a JSON document: an event, a stored answer) with the personal fields of every
    object that is the member or one of its transactions set to null; None if it has none.

    Client metadata is not looked into (another member's metadata may hold any keys), and
    objects of other members keep theirs: the receiver's row of a transfer is the receiver's.
    """
    document = msgspec.json.decode(text)
    if not _scrub(document, member_id):
        return None
    return msgspec.json.encode(document)


def _scrub(value: Any, member_id: str) -> bool:
    """Null the personal fields of the member's objects within `value`, in place; whether any
    held something."""
    changed = False
    if isinstance(value, dict):
        if value.get("member_id") == member_id:
            for field in PERSONAL_FIELDS:
                if value.get(field) is not None:
                    value[field] = None
                    changed = True
        for key, inner in value.items():
            if key != "metadata" and _scrub(inner, member_id):
                changed = True
    elif isinstance(value, list):
        for inner in value:
            if _scrub(inner, member_id):
                changed = True
    return changed
