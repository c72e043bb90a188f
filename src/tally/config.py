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
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            database_url=env.get("TALLY_DATABASE_URL", DEFAULT_DATABASE_URL),
            max_body_bytes=int(env.get("TALLY_MAX_BODY_BYTES", cls.max_body_bytes)),
            sweep_interval=float(env.get("TALLY_SWEEP_INTERVAL", cls.sweep_interval)),
            key_cache_seconds=float(env.get("TALLY_KEY_CACHE_SECONDS", cls.key_cache_seconds)),
            cors_origins=_origins(env.get("TALLY_CORS_ORIGINS", "")),
        )


def _origins(text: str) -> tuple[str, ...]:
    """`TALLY_CORS_ORIGINS`: origins separated by commas (`https://a.example,https://b.example`,
    or `*`); empty (the default) allows none."""
    return tuple(origin.strip() for origin in text.split(",") if origin.strip())
