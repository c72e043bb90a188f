"""The storage contract (`tally.ports.Tx`) in SQL that SQLite and PostgreSQL both speak.

One module per role: `members`, `entries`, `lots`, `catalog` (the ledger's own rows), `events`
(the outbox), `webhooks` (endpoints and deliveries), `admin` (programs, keys, idempotency
replies), `audit` and `reports` (balances in the past, the program report); `rows` converts
rows to values, `session` runs statements. Connections, transactions and commits belong to the
backends, not here.
"""

from __future__ import annotations

from tally.storage.sql.admin import SqlKeys, SqlPrograms, SqlReplies
from tally.storage.sql.audit import SqlAudit
from tally.storage.sql.catalog import SqlCatalog
from tally.storage.sql.entries import SqlEntries
from tally.storage.sql.events import SqlEvents
from tally.storage.sql.lots import SqlLots
from tally.storage.sql.members import SqlMembers
from tally.storage.sql.reports import SqlReports
from tally.storage.sql.session import Connection, Dialect, Session
from tally.storage.sql.webhooks import SqlWebhooks

__all__ = ["Connection", "Dialect", "SqlTx"]


class SqlTx:
    """One open transaction on a DB-API style connection: every role over one `Session`."""

    __slots__ = (
        "members",
        "entries",
        "lots",
        "catalog",
        "replies",
        "events",
        "programs",
        "keys",
        "audit",
        "webhooks",
        "reports",
    )

    def __init__(self, conn: Connection, dialect: Dialect, *, one_statement: bool = False) -> None:
        session = Session(conn, dialect, one_statement=one_statement)
        self.members = SqlMembers(session)
        self.entries = SqlEntries(session)
        self.lots = SqlLots(session)
        self.catalog = SqlCatalog(session)
        self.replies = SqlReplies(session)
        self.events = SqlEvents(session)
        self.programs = SqlPrograms(session)
        self.keys = SqlKeys(session)
        self.audit = SqlAudit(session)
        self.webhooks = SqlWebhooks(session)
        self.reports = SqlReports(session)
