"""Versioned schema migrations, applied with yoyo under its lock (safe from several processes)."""

from __future__ import annotations

import contextlib
import io
from importlib import resources
from typing import Any

from yoyo import get_backend, read_migrations


def apply_migrations(*, yoyo_url: str, backend_name: str) -> list[str]:
    """Apply the migrations in `migrations/<backend_name>` not yet applied; return their ids."""
    folder = resources.files("tally.storage") / "migrations" / backend_name
    migrations = read_migrations(str(folder))
    backend = open_backend(yoyo_url, backend_name=backend_name)
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            # yoyo prints the rows of any statement that returns some, and SQLite answers an
            # ALTER TABLE ... ADD COLUMN with a CHECK with the rows of its own verification
            # query: none of that may reach standard output, where `tally serve` prints the key.
            with contextlib.redirect_stdout(io.StringIO()):
                backend.apply_migrations(pending)
            return [m.id for m in pending]
    finally:
        backend.connection.close()


def open_backend(yoyo_url: str, *, backend_name: str) -> Any:
    """yoyo's backend on the database, over a connection of its own.

    On PostgreSQL that connection prepares no statement: PgBouncer in transaction mode may be
    in between (`tally.storage.postgres`), and migrations run too seldom to gain from it.
    yoyo's lock is a row of its lock table, not a session lock, so it holds there too.
    """
    backend = get_backend(yoyo_url)
    if backend_name == "postgres":
        backend.connection.prepare_threshold = None
    return backend
