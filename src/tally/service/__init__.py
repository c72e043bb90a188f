"""Tally's use cases, one module per feature over one shared `Runner`.

`runner` owns the transaction, idempotency and retries; `accounts` loads a member up to date and
saves what a rule planned; `outbox` writes the events of a change; `members`, `erasure`,
`enrolment`, `points`, `transfers`, `reversals`, `lifecycle`, `rewards`, `programs`, `reports`,
`access`, `events` (the feed), `webhooks`, `imports` (awards files) and `exports` (transactions,
page by page) are the features. A new feature is a new module here and one more field of
`Ledger`. Nothing here speaks HTTP or SQL.
"""

from __future__ import annotations

from tally.commands import Clock
from tally.keys import KeyCache
from tally.ports import Store
from tally.service.access import Access
from tally.service.erasure import Erasure
from tally.service.events import Events
from tally.service.exports import Exports
from tally.service.imports import Imports
from tally.service.lifecycle import Lifecycle
from tally.service.members import Members
from tally.service.points import Points
from tally.service.programs import Programs
from tally.service.reports import Reports
from tally.service.reversals import Reversals
from tally.service.rewards import Rewards
from tally.service.runner import Runner, system_clock
from tally.service.transfers import Transfers
from tally.service.webhooks import WebhookPolicy, Webhooks

__all__ = ["Ledger", "WebhookPolicy", "system_clock"]


class Ledger:
    """Every use case of one running server (or one CLI command) over one store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        key_cache: KeyCache | None = None,
        webhooks: WebhookPolicy | None = None,
    ) -> None:
        runner = Runner(store, clock=clock)
        webhooks = webhooks or WebhookPolicy()
        self.access = Access(runner, key_cache=key_cache or KeyCache())
        self.members = Members(runner)
        self.erasure = Erasure(runner)
        self.points = Points(runner)
        self.transfers = Transfers(runner)
        self.reversals = Reversals(runner)
        self.lifecycle = Lifecycle(runner, retention=webhooks.retention)
        self.rewards = Rewards(runner)
        self.reports = Reports(runner, lifecycle=self.lifecycle)
        self.programs = Programs(runner)
        self.events = Events(runner)
        self.webhooks = Webhooks(runner, policy=webhooks)
        self.imports = Imports(runner)
        self.exports = Exports(runner)
