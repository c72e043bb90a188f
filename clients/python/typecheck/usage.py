"""What a user's type checker sees (checked by `mypy --strict` in `make lint`, never run):
every method's arguments and result are typed, on both clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import assert_type

from tally_client import (
    AsyncTallyClient,
    Balance,
    Event,
    Member,
    NewTransaction,
    TallyClient,
    Transaction,
    Transfer,
)


def sync(tally: TallyClient) -> None:
    assert_type(tally.create_member(member_id="m"), Member)
    assert_type(tally.award(member_id="m", points=5, reason="r"), NewTransaction)
    assert_type(tally.balance("m"), Balance)
    assert_type(tally.history("m", type="award"), Iterator[Transaction])
    assert_type(tally.events(), Iterator[Event])
    assert_type(tally.metrics(), str)
    moved = tally.transfer(from_member_id="a", to_member_id="b", points=1, reason="r")
    assert_type(moved, Transfer)
    assert_type(moved.from_.points, int)
    tally.award(member_id="m", points="5", reason="r")  # type: ignore[arg-type]
    tally.award(member_id="m", reason="r")  # type: ignore[call-arg]
    tally.get_member("m", "extra")  # type: ignore[call-arg]


async def asynchronous(tally: AsyncTallyClient) -> None:
    assert_type(await tally.award(member_id="m", points=5, reason="r"), NewTransaction)
    assert_type(await tally.balance("m", as_of="2026-01-01T00:00:00Z"), Balance)
    assert_type(tally.history("m"), AsyncIterator[Transaction])
    async for row in tally.list_members():
        assert_type(row, Member)
