"""Use cases of a program's own settings: its expiry policy, and whether awards enrol unknown
members. Programs and keys are created from the command line (`tally.maintenance`), not here."""

from __future__ import annotations

from tally.commands import ProgramChanges
from tally.domain import Program
from tally.ports import Tx
from tally.service.runner import Runner


class Programs:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def get(self, program_id: int) -> Program:
        return await self._runner.store.lookup(lambda tx: tx.programs.get(program_id))

    async def update(self, program_id: int, changes: ProgramChanges) -> Program:
        """Apply the settings `changes` names, together.

        The expiry policy: new lots expire that many days after they become available (None:
        never); lots that exist keep the expiry they were given. `enrol_on_award`: from now on,
        awards, bulk items and transfers to an unknown member id enrol it (or, off, refuse).
        """

        def work(tx: Tx) -> Program:
            if changes.expiry_set:
                tx.programs.set_expiry_policy(program_id, changes.points_expire_after_days)
            if changes.enrol_on_award is not None:
                tx.programs.set_enrol_on_award(program_id, changes.enrol_on_award)
            return tx.programs.get(program_id)

        return await self._runner.write(work)
