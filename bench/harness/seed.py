"""Data the scenarios need, made before they run: members, a hot member, a long history."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
import psycopg

from harness.config import HISTORY_MEMBER, HOT_MEMBER, MEMBER_PREFIX
from tally.ids import new_id

CONCURRENCY = 32
HOT_START_POINTS = 100  # low, so some deducts meet an empty balance (expected 422s)
HISTORY_POINTS = 10
NEVER = 2**63 - 1
Row = tuple[Any, ...]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create_members(url: str, key: str, count: int) -> float:
    """`count` numbered members plus the hot and history ones, through the API; seconds taken."""
    ids = [f"{MEMBER_PREFIX}{i}" for i in range(count)] + [HOT_MEMBER, HISTORY_MEMBER]
    started = time.perf_counter()
    asyncio.run(_post_members(urlsplit(url), key, ids))
    return time.perf_counter() - started


async def _post_members(url: SplitResult, key: str, ids: list[str]) -> None:
    """POST /v1/members for every id over CONCURRENCY keep-alive connections.

    A bare asyncio HTTP/1.1 client rather than httpx: httpx.AsyncClient managed only 100 to 300
    requests/s here under concurrency (the server takes thousands), so 10,000 members took
    minutes instead of seconds.
    """
    queue = iter(ids)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    await asyncio.gather(*(_member_worker(host, port, key, queue) for _ in range(CONCURRENCY)))


async def _member_worker(host: str, port: int, key: str, ids: Iterator[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for member_id in ids:
            body = json.dumps({"member_id": member_id}).encode()
            head = (
                f"POST /v1/members HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            status, answer = await _read_response(reader)
            if status != 201:
                raise RuntimeError(f"creating member {member_id}: {status} {answer[:300]!r}")
    finally:
        writer.close()
        await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one response that has a Content-Length (Tally's always do)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    length = int({k.lower(): v for k, v in fields.items()}["content-length"])
    return int(lines[0].split()[1]), await reader.readexactly(length)


def fund_hot_member(url: str, key: str) -> None:
    """Start the hot member with some points, so half the deducts can succeed from the start."""
    body = {"member_id": HOT_MEMBER, "points": HOT_START_POINTS, "reason": "bench start"}
    response = httpx.post(url + "/v1/points/award", json=body, headers=auth(key), timeout=30)
    response.raise_for_status()


def load_history_http(url: str, key: str, rows: int, per_request: int) -> float:
    """`rows` awards to the history member through bulk requests; seconds taken."""
    started = time.perf_counter()
    with httpx.Client(base_url=url, headers=auth(key), timeout=600) as client:
        for first in range(0, rows, per_request):
            size = min(per_request, rows - first)
            awards = [
                {"member_id": HISTORY_MEMBER, "points": HISTORY_POINTS, "reason": f"seed {i}"}
                for i in range(first, first + size)
            ]
            response = client.post("/v1/points/award/bulk", json={"awards": awards})
            response.raise_for_status()
            if response.json()["data"]["failed"]:
                raise RuntimeError(f"history bulk load failed: {response.text[:500]}")
    return time.perf_counter() - started


# Direct SQL: the same rows `POST /v1/points/award` writes, without a million round trips.

_ENTRY_SQL = (
    "INSERT INTO entries (id, program_id, member_pk, seq, type, status, points, reason, "
    "balance_after, created_at, effective_at) VALUES (?, ?, ?, ?, 'award', 'posted', ?, ?, ?, ?, ?)"
)
_LOT_SQL = (
    "INSERT INTO lots (entry_id, member_pk, seq, points, remaining, expires_at, source_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_MEMBER_SQL = (
    "UPDATE members SET balance = ?, lifetime_earned = ?, last_seq = ?, entry_count = ? "
    "WHERE pk = ? AND last_seq = 0"
)
_FIND_SQL = "SELECT pk, program_id FROM members WHERE member_id = ?"


def _award_rows(program_id: int, member_pk: int, rows: int) -> Iterator[tuple[Row, Row]]:
    """(entry row, lot row) of award number 1..rows: posted, never expiring, 1 ms apart."""
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    for seq in range(1, rows + 1):
        entry_id = new_id("txn_")
        at = now - (rows - seq) * 1000
        balance = seq * HISTORY_POINTS
        entry = (entry_id, program_id, member_pk, seq, HISTORY_POINTS, f"seed {seq}", balance)
        lot = (entry_id, member_pk, seq, HISTORY_POINTS, HISTORY_POINTS, NEVER, entry_id)
        yield (*entry, at, at), lot


def load_history_sql(backend: str, url: str, rows: int) -> float:
    """`rows` awards to the history member written straight into the database; seconds taken."""
    started = time.perf_counter()
    if backend == "sqlite":
        _load_sqlite(url.removeprefix("sqlite:///"), rows)
    else:
        _load_postgres(url, rows)
    return time.perf_counter() - started


def _member_update(rows: int, member_pk: int) -> tuple[int, ...]:
    total = rows * HISTORY_POINTS
    return (total, total, rows, rows, member_pk)


def _load_sqlite(path: str, rows: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        member_pk, program_id = conn.execute(_FIND_SQL, (HISTORY_MEMBER,)).fetchone()
        pairs = list(_award_rows(program_id, member_pk, rows))
        conn.executemany(_ENTRY_SQL, (entry for entry, _ in pairs))
        conn.executemany(_LOT_SQL, (lot for _, lot in pairs))
        if conn.execute(_MEMBER_SQL, _member_update(rows, member_pk)).rowcount != 1:
            raise RuntimeError("the history member already had entries")
        conn.execute("COMMIT")
    finally:
        conn.close()


def _load_postgres(url: str, rows: int) -> None:
    with psycopg.connect(url) as conn:
        find = _FIND_SQL.replace("?", "%s")
        member_pk, program_id = conn.execute(find, (HISTORY_MEMBER,)).fetchone()  # type: ignore[misc]
        pairs = list(_award_rows(program_id, member_pk, rows))
        entry_columns = (
            "id, program_id, member_pk, seq, points, reason, balance_after, created_at, "
            "effective_at, type, status"
        )
        with conn.cursor().copy(f"COPY entries ({entry_columns}) FROM STDIN") as copy:
            for entry, _ in pairs:
                copy.write_row((*entry, "award", "posted"))
        lot_columns = "entry_id, member_pk, seq, points, remaining, expires_at, source_id"
        with conn.cursor().copy(f"COPY lots ({lot_columns}) FROM STDIN") as copy:
            for _, lot in pairs:
                copy.write_row(lot)
        update = conn.execute(_MEMBER_SQL.replace("?", "%s"), _member_update(rows, member_pk))
        if update.rowcount != 1:
            raise RuntimeError("the history member already had entries")
        conn.commit()
        conn.execute("ANALYZE entries")
        conn.execute("ANALYZE lots")
