"""CPU per request inside one process, without sockets: where Tally's time goes.

    .venv/bin/python bench/inprocess.py [--backends sqlite,postgresql] [--requests N]

Drives the ASGI apps directly (no uvicorn, no wrk) with `--concurrency` requests in flight on
uvloop and reads `time.process_time()` (every thread of the process: SQLite's commit thread
included). Prints, per backend, the floor reference's route, a Tally award and a Tally balance
read: requests/s, microseconds of CPU per request and, on PostgreSQL, round trips to the
database per request (`PostgresStore.round_trips`, over both rounds of `_measure`). The
difference to the HTTP figures of `run.py` is what the server and the sockets cost. See "What
limits the missed targets" in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import uvloop
from harness.databases import DEFAULT_PG_ADMIN_URL, Database, fresh_postgres, fresh_sqlite
from refs.floor import app as floor_app

from tally.config import Settings
from tally.http.app import create_app
from tally.storage import open_store

App = Callable[..., Awaitable[None]]
MEMBERS = 200


def _scope(method: str, path: str, key: str, length: int) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def _call(app: App, method: str, path: str, key: str, body: bytes = b"") -> int:
    """One request through `app`; its status."""
    delivered = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the app answers
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(_scope(method, path, key, len(body)), receive, send)
    return status[0]


def _award_body(n: int) -> bytes:
    return b'{"member_id": "m%d", "points": 10, "reason": "in-process"}' % (n % MEMBERS)


async def _measure(
    app: App,
    method: str,
    path: Callable[[int], str],
    body: Callable[[int], bytes],
    key: str,
    *,
    requests: int,
    concurrency: int,
) -> tuple[float, float]:
    """(requests/s, µs of CPU per request) after one unmeasured round of the same load."""

    async def worker(offset: int) -> None:
        for n in range(offset, requests, concurrency):
            status = await _call(app, method, path(n), key, body(n))
            if status not in (200, 201):
                raise RuntimeError(f"{method} {path(n)} answered {status}")

    rounds: list[tuple[float, float]] = []
    for _ in range(2):
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        rounds.append((time.perf_counter() - wall, time.process_time() - cpu))
    wall_s, cpu_s = rounds[-1]
    return requests / wall_s, cpu_s / requests * 1e6


async def _run(database: Database, *, requests: int, concurrency: int) -> list[str]:
    store = open_store(database.url)
    app = create_app(store, settings=Settings(database_url=database.url, sweep_interval=0))
    key = database.key
    try:
        for n in range(MEMBERS):
            body = b'{"member_id": "m%d"}' % n
            if await _call(app, "POST", "/v1/members", key, body) != 201:
                raise RuntimeError("could not create the members")
        cases = [
            ("floor", floor_app, "POST", lambda n: "/v1/points/award", _award_body),
            ("award", app, "POST", lambda n: "/v1/points/award", _award_body),
            ("balance", app, "GET", lambda n: f"/v1/members/m{n % MEMBERS}/balance", _no_body),
        ]
        lines = []
        for name, target, method, path, body_of in cases:
            before = _round_trips(store)
            rate, cpu = await _measure(
                target, method, path, body_of, key, requests=requests, concurrency=concurrency
            )
            per_request = ""
            if before is not None:
                per_request = f"{((_round_trips(store) or 0) - before) / (2 * requests):.2f}"
            lines.append(
                f"| {database.backend} | {name} | {rate:,.0f} | {cpu:,.0f} | {per_request} |"
            )
        return lines
    finally:
        await store.aclose()
        store.close()


def _round_trips(store: object) -> int | None:
    """The store's round trips to its database so far, if it counts them (PostgreSQL)."""
    trips: int | None = getattr(store, "round_trips", None)
    return trips


def _no_body(n: int) -> bytes:
    return b""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pg-url", default=DEFAULT_PG_ADMIN_URL)
    options = parser.parse_args()
    fresh: dict[str, Callable[[], AbstractContextManager[Database]]] = {
        "sqlite": fresh_sqlite,
        "postgresql": lambda: fresh_postgres(options.pg_url),
    }
    print("| backend | case | requests/s | CPU µs per request | round trips per request |")
    print("| --- | --- | ---: | ---: | ---: |")
    for backend in options.backends.split(","):
        with fresh[backend]() as database:
            lines = uvloop.run(
                _run(database, requests=options.requests, concurrency=options.concurrency)
            )
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
