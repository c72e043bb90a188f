"""Storage backends, chosen by the scheme of the database URL.

`sql/` holds the queries (one module per role of `tally.ports.Tx`), shared by both backends;
`sqlite.py` and `postgres.py` hold connections, transactions and commits; `bridge.py` runs the
synchronous query code over psycopg's asyncio driver; `migrations/` the schema of each.
"""

from __future__ import annotations

from collections.abc import Callable

from tally.ports import Store


def _sqlite(url: str) -> Store:
    from tally.storage.sqlite import SqliteStore

    return SqliteStore(url)


def _postgres(url: str) -> Store:
    from tally.storage.postgres import PostgresStore

    return PostgresStore(url)


BACKENDS: dict[str, Callable[[str], Store]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}


def missing_database(url: str) -> str | None:
    """Where a SQLite database that does not exist was looked for (None if it exists, or if
    the URL is not SQLite's: a PostgreSQL database that is not there fails on connecting)."""
    if not url.startswith("sqlite:"):
        return None
    from tally.storage.sqlite import path_from_url

    try:
        path = path_from_url(url)
    except ValueError:
        return None  # `open_store` says what is wrong with the URL
    return None if path.exists() else str(path.resolve())


def open_store(url: str) -> Store:
    """The store for `url` (`sqlite:///path.db` or `postgresql://user@host/db`)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in BACKENDS:
        raise ValueError(
            f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://..."
        )
    return BACKENDS[scheme](url)
