"""Settings, from `TALLY_*` environment variables (read only when asked, never at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DATABASE_URL = "sqlite:///./tally.db"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = 5 * 1024 * 1024
    sweep_interval: float = 5.0
    key_cache_seconds: float = 0.5
    # How long a SQLite write waits for another process's write lock before it is answered
    # `503 unavailable` (the write did not happen).
    sqlite_busy_timeout_ms: int = 10_000
    # After SIGTERM, how long requests in flight may take to finish before they are cut off.
    shutdown_grace_seconds: int = 25

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            database_url=env.get("TALLY_DATABASE_URL", DEFAULT_DATABASE_URL),
            max_body_bytes=int(env.get("TALLY_MAX_BODY_BYTES", cls.max_body_bytes)),
            sweep_interval=float(env.get("TALLY_SWEEP_INTERVAL", cls.sweep_interval)),
            key_cache_seconds=float(env.get("TALLY_KEY_CACHE_SECONDS", cls.key_cache_seconds)),
            sqlite_busy_timeout_ms=int(
                env.get("TALLY_SQLITE_BUSY_TIMEOUT_MS", cls.sqlite_busy_timeout_ms)
            ),
            shutdown_grace_seconds=int(
                env.get("TALLY_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds)
            ),
        )
