"""Use cases of members: enrol, fetch, list, change the profile (rows through `Tx`,
transactions through the runner; nothing here speaks SQL or HTTP). Erasure is `erasure.py`'s."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from tally import ids
from tally.commands import Idempotency, Listing, MemberChanges, Reply
from tally.domain import Member, Page, Profile
from tally.errors import MemberExists, MemberNotFound
from tally.ports import Tx
from tally.rules import members as rules
from tally.service import accounts, outbox
from tally.service.runner import Render, Runner


class Members:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def create(
        self,
        program_id: int,
        profile: Profile,
        *,
        idempotency: Idempotency | None,
        render: Render[Member],
    ) -> Reply:
        """Enrol a member under the id given, or a new `mem_` id when none is."""

        def effect(tx: Tx, now: datetime) -> Member:
            chosen = (
                profile
                if profile.member_id
                else replace(profile, member_id=ids.new_id("mem_", now))
            )
            if not tx.members.insert(program_id, chosen, now=now):
                raise MemberExists(f"Member {chosen.member_id} already exists.")
            member = tx.members.get(program_id, chosen.member_id)
            assert member is not None
            outbox.member_created(tx, member, now)
            return member

        return await self._runner.change(program_id, idempotency, effect, render)

    async def update(self, program_id: int, member_id: str, changes: MemberChanges) -> Member:
        """Change the fields `changes` names (`409 member_erased` once the member is erased);
        a change that names nothing answers the member as it is, with no event."""

        def work(tx: Tx) -> Member:
            now = self._runner.clock()
            member = accounts.locked_member(tx, program_id, member_id, now).member
            profile = rules.changed_profile(member, changes)
            if changes == MemberChanges():
                return member
            tx.members.save_profile(member.pk, profile)
            updated = replace(member, profile=profile)
            outbox.member_updated(tx, updated, now)
            return updated

        return await self._runner.write(work)

    async def get(self, program_id: int, member_id: str) -> Member:
        def read(tx: Tx, now: datetime, writable: bool) -> Member:
            member = tx.members.get(program_id, member_id)
            if member is None:
                raise MemberNotFound(f"Member {member_id} does not exist.")
            return member

        return await self._runner.view_one(read)

    async def listing(self, program_id: int, page: Page) -> Listing[Member]:
        def read(tx: Tx, now: datetime, writable: bool) -> Listing[Member]:
            total = tx.members.count(program_id)
            rows = tx.members.page(program_id, offset=page.offset, limit=page.size)
            return Listing(rows, total, page)

        return await self._runner.view(read)
