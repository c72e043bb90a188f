"""Settings, from `TALLY_*` environment variables (read only when asked, never at import)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from tally.rules.webhooks import DEFAULT_SCHEDULE, parse_schedule

DEFAULT_DATABASE_URL = "sqlite:///./tally.db"
DEFAULT_RATE_LIMIT = "100/s:200"


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: `per_second` requests a second on average, up to `burst` at once."""

    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """`N/s`, `N/s:BURST` (the burst defaults to twice the rate) or `off` (None)."""
        if text.strip().lower() == "off":
            return None
        shape = re.fullmatch(r"\s*(\d+(?:\.\d+)?)/s(?::(\d+))?\s*", text)
        rate = float(shape.group(1)) if shape else 0.0
        burst = int(shape.group(2)) if shape and shape.group(2) else math.ceil(2 * rate)
        if not shape or rate <= 0 or burst < 1:
            raise ValueError(
                f"TALLY_RATE_LIMIT must be N/s, N/s:BURST (N above 0, BURST at least 1) or off,"
                f" not {text!r}"
            )
        return cls(rate, burst)


FAILED_AUTH_LIMIT = Rate(10.0, 20)
"""Failed authentications a client address may make (on whenever TALLY_RATE_LIMIT is)."""


@dataclass(frozen=True)
class Settings:
    """What an app runs with. The defaults here are an app built in code (tests, benchmarks):
    no rate limits. `from_env`, what `tally serve` reads, applies the contract's default
    (100 requests a second per key, burst 200) unless `TALLY_RATE_LIMIT=off`."""

    database_url: str = DEFAULT_DATABASE_URL
    max_body_bytes: int = 5 * 1024 * 1024
    sweep_interval: float = 5.0
    key_cache_seconds: float = 0.5
    # How long a SQLite write waits for another process's write lock before it is answered
    # `503 unavailable` (the write did not happen).
    sqlite_busy_timeout_ms: int = 10_000
    # After SIGTERM, how long requests in flight may take to finish before they are cut off.
    shutdown_grace_seconds: int = 25
    cors_origins: tuple[str, ...] = ()
    rate_limit: Rate | None = None
    failed_auth_limit: Rate | None = None
    # Webhooks (api.md section 8): whether endpoints may be on private addresses (tests, a
    # private network), each attempt's timeout, the retry schedule (seconds before each
    # attempt), and how often an idle dispatcher looks for work (0: no dispatcher in serve).
    webhooks_allow_private: bool = False
    webhooks_timeout_seconds: float = 15.0
    webhooks_retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    webhooks_poll_seconds: float = 0.5
    # Events and finished deliveries older than this are dropped by the sweep.
    events_retention_days: int = 30

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        rate = Rate.parse(env.get("TALLY_RATE_LIMIT", DEFAULT_RATE_LIMIT))
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
            cors_origins=_origins(env.get("TALLY_CORS_ORIGINS", "")),
            rate_limit=rate,
            failed_auth_limit=None if rate is None else FAILED_AUTH_LIMIT,
            webhooks_allow_private=_flag(env, "TALLY_WEBHOOKS_ALLOW_PRIVATE"),
            webhooks_timeout_seconds=float(
                env.get("TALLY_WEBHOOKS_TIMEOUT_SECONDS", cls.webhooks_timeout_seconds)
            ),
            webhooks_retry_schedule=parse_schedule(
                env.get("TALLY_WEBHOOKS_RETRY_SCHEDULE", ",".join(map(str, DEFAULT_SCHEDULE)))
            ),
            webhooks_poll_seconds=float(
                env.get("TALLY_WEBHOOKS_POLL_SECONDS", cls.webhooks_poll_seconds)
            ),
            events_retention_days=int(
                env.get("TALLY_EVENTS_RETENTION_DAYS", cls.events_retention_days)
            ),
        )


def _origins(text: str) -> tuple[str, ...]:
    """`TALLY_CORS_ORIGINS`: origins separated by commas (`https://a.example,https://b.example`,
    or `*`); empty (the default) allows none."""
    return tuple(origin.strip() for origin in text.split(",") if origin.strip())


def _flag(env: dict[str, str], name: str) -> bool:
    """A yes/no setting: `true`/`1`/`yes` (any case) is yes; unset or anything else is no."""
    return env.get(name, "").strip().lower() in ("true", "1", "yes")
