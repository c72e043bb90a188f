"""Use cases of a program's own settings (today: its expiry policy). Programs and keys are
created from the command line (`tally.maintenance`), not here."""

from __future__ import annotations

from tally.domain import Program
from tally.ports import Tx
from tally.service.runner import Runner


class Programs:
    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def get(self, program_id: int) -> Program:
        return await self._runner.store.lookup(lambda tx: tx.programs.get(program_id))

    async def set_expiry_policy(self, program_id: int, days: int | None) -> Program:
        """New lots expire `days` after they become available (None: never); lots that exist
        keep the expiry they were given."""

        def work(tx: Tx) -> Program:
            tx.programs.set_expiry_policy(program_id, days)
            return tx.programs.get(program_id)

        return await self._runner.write(work)
