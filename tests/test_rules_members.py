"""The member rules (`tally.rules.members`): profile changes, and what erasure removes from a
JSON copy of the member's objects (an event, a stored answer)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tally.commands import MemberChanges
from tally.domain import Account, Member, Profile
from tally.errors import MemberErased
from tally.rules import members as rules

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def member(*, erased_at: datetime | None = None) -> Member:
    profile = Profile("m", email="m@example.com", name="M", metadata='{"tier":"gold"}')
    return Member(1, 1, profile, Account(), NOW, erased_at=erased_at)


def scrubbed(document: Any, member_id: str = "m") -> Any:
    found = rules.without_personal_data(json.dumps(document, separators=(",", ":")), member_id)
    return None if found is None else json.loads(found)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (MemberChanges(), ("m@example.com", "M", '{"tier":"gold"}')),
        (MemberChanges(name="N", name_set=True), ("m@example.com", "N", '{"tier":"gold"}')),
        (MemberChanges(email_set=True, metadata_set=True), (None, "M", None)),
    ],
)
def test_a_change_replaces_only_the_fields_it_names(
    changes: MemberChanges, expected: tuple[str | None, ...]
) -> None:
    profile = rules.changed_profile(member(), changes)
    assert (profile.email, profile.name, profile.metadata) == expected


def test_an_erased_members_profile_cannot_change() -> None:
    with pytest.raises(MemberErased, match="m's personal data was erased"):
        rules.changed_profile(member(erased_at=NOW), MemberChanges(name="N", name_set=True))


def test_erasing_empties_the_profile_and_keeps_the_first_erasure_time() -> None:
    first = rules.erased(member(), now=NOW)
    assert (first.profile, first.erased_at) == (Profile("m"), NOW)
    later = datetime(2026, 4, 1, tzinfo=UTC)
    assert rules.erased(first, now=later).erased_at == NOW


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        # a member event: every personal field
        (
            {"type": "member.created", "data": {"member_id": "m", "email": "e", "name": "n"}},
            {"type": "member.created", "data": {"member_id": "m", "email": None, "name": None}},
        ),
        # a transaction in a stored answer: its metadata, and nothing else
        (
            {"data": {"member_id": "m", "reason": "r", "metadata": {"a": 1}}},
            {"data": {"member_id": "m", "reason": "r", "metadata": None}},
        ),
        # a transfer: only the erased member's side
        (
            {
                "from": {"member_id": "m", "metadata": {"a": 1}},
                "to": {"member_id": "x", "metadata": {"a": 1}},
            },
            {
                "from": {"member_id": "m", "metadata": None},
                "to": {"member_id": "x", "metadata": {"a": 1}},
            },
        ),
        # in a list (a page of history)
        (
            [{"member_id": "m", "metadata": {"a": 1}}, {"member_id": "mm", "metadata": {"a": 1}}],
            [{"member_id": "m", "metadata": None}, {"member_id": "mm", "metadata": {"a": 1}}],
        ),
    ],
)
def test_erasure_nulls_the_personal_fields_of_the_members_objects_only(
    document: Any, expected: Any
) -> None:
    assert scrubbed(document) == expected


@pytest.mark.parametrize(
    "document",
    [
        {"data": {"member_id": "m", "email": None, "metadata": None}},  # nothing left to remove
        {"data": {"member_id": "x", "email": "e"}},  # another member's
        # another member's metadata that happens to name the member is client data: untouched
        {"data": {"member_id": "x", "metadata": {"member_id": "m", "email": "e"}}},
    ],
)
def test_a_document_without_the_members_personal_data_is_left_alone(document: Any) -> None:
    assert scrubbed(document) is None


def test_the_first_filter_is_the_members_id_as_tally_writes_it() -> None:
    assert rules.mentions("m_1") == '"member_id":"m_1"'
