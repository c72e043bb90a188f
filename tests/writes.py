"""Keyed writes sent by many threads to a real server, and the ledger they must add up to.

Every write is an award or a deduct with an Idempotency-Key of its own, so after a crash, an
outage or a shutdown each one can be sent again and must then have had exactly one effect. The
members are funded first with more than all deducts can ever take, so no deduct is refused and
the expected ledger follows from the writes alone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

FUNDING = 1_000_000  # each member's first award; the deducts of a run take far less
MEMBERS = ("m1", "m2", "m3", "m4")


@dataclass
class Write:
    """One keyed write and what became of its first sending."""

    index: int
    member: str
    kind: str  # "award" or "deduct"
    points: int
    key: str
    body: bytes  # the exact bytes sent, so that sending it again is the same request
    started: float = 0.0  # time.monotonic() when it was sent
    answered: float | None = None  # when the answer arrived (None: never)
    status: int | None = None
    reply: bytes = b""
    headers: httpx.Headers | None = None
    error: str | None = None  # the transport error when there was no answer

    @property
    def path(self) -> str:
        return f"/v1/points/{self.kind}"

    @property
    def effect(self) -> int:
        return self.points if self.kind == "award" else -self.points

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def transaction_id(self) -> str:
        return str(json.loads(self.reply)["data"]["transaction_id"])

    def answer(self) -> dict[str, Any]:
        return dict(json.loads(self.reply))


def make_write(index: int, *, run: str, members: tuple[str, ...] = MEMBERS) -> Write:
    """Write number `index` of a run: one deduct in three, points from 1 to 97."""
    member = members[index % len(members)]
    kind = "deduct" if index % 3 == 2 else "award"
    points = 1 + (index * 7919) % 97
    body = {"member_id": member, "points": points, "reason": f"{kind} {index} of {run}"}
    return Write(index, member, kind, points, f"{run}-{index}", json.dumps(body).encode())


def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def send(client: httpx.Client, write: Write) -> httpx.Response:
    headers = {"Idempotency-Key": write.key, "Content-Type": "application/json"}
    return client.post(write.path, content=write.body, headers=headers)


def fund(url: str, api_key: str, members: Iterable[str] = MEMBERS) -> None:
    """Enrol the members and give each FUNDING points."""
    with httpx.Client(base_url=url, headers=auth(api_key), timeout=30) as client:
        for member in members:
            assert client.post("/v1/members", json={"member_id": member}).status_code == 201
            body = {"member_id": member, "points": FUNDING, "reason": "funding"}
            response = client.post("/v1/points/award", json=body)
            assert response.status_code == 201, response.text


class Load:
    """`threads` clients, each sending one write after another (each with its own key) until
    stopped. Every write sent is kept in `writes`, answered or not."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        threads: int = 16,
        run: str = "w",
        timeout: float = 30,
        members: tuple[str, ...] = MEMBERS,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.run = run
        self.members = members
        self.timeout = timeout
        self.writes: list[Write] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Send nothing more; wait for the writes on their way to be answered or to fail."""
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 30)
        assert not any(thread.is_alive() for thread in self._threads), "a client hung"

    def acknowledged(self) -> list[Write]:
        return [w for w in list(self.writes) if w.acknowledged]

    def outstanding(self) -> int:
        """Writes sent and not yet answered (nor failed)."""
        return sum(w.answered is None and w.error is None for w in list(self.writes))

    def wait_for_acks(self, count: int, *, outstanding: int = 8, timeout: float = 120) -> None:
        """Until `count` writes are acknowledged while at least `outstanding` are on their way
        (the clients have all started)."""
        self.wait_for(
            lambda: len(self.acknowledged()) >= count and self.outstanding() >= outstanding,
            timeout=timeout,
            what=f"{count} acknowledged writes with {outstanding} more on their way",
        )

    def wait_for(self, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
        """Poll `condition` while the load runs; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.002)  # polling for a condition, with a deadline

    def _next(self) -> Write | None:
        with self._lock:
            if self._stopped.is_set():
                return None
            write = make_write(len(self.writes), run=self.run, members=self.members)
            write.started = time.monotonic()
            self.writes.append(write)
            return write

    def _client(self) -> None:
        with httpx.Client(
            base_url=self.url, headers=auth(self.api_key), timeout=self.timeout
        ) as client:
            while (write := self._next()) is not None:
                try:
                    response = send(client, write)
                except httpx.TransportError as error:
                    write.error = f"{type(error).__name__}: {error}"
                    continue
                write.answered = time.monotonic()
                write.reply = response.content
                write.headers = response.headers
                write.status = response.status_code


def resend_all(url: str, api_key: str, writes: list[Write], *, threads: int = 8) -> list[Resent]:
    """Send every write again with its key; each must be answered 201 now."""
    limits = httpx.Limits(max_connections=threads)
    with httpx.Client(base_url=url, headers=auth(api_key), timeout=60, limits=limits) as client:

        def again(write: Write) -> Resent:
            response = send(client, write)
            assert response.status_code == 201, (write.key, response.status_code, response.text)
            replayed = response.headers.get("Idempotent-Replayed") == "true"
            return Resent(write, replayed, response.content)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(again, writes))


@dataclass(frozen=True)
class Resent:
    write: Write
    replayed: bool  # the first sending had committed: its stored answer came back
    reply: bytes


# What a 503 says when the write is known not to have happened.
NOT_APPLIED = ("nothing was changed", "did not happen")


def check_resent(resent: list[Resent]) -> int:
    """Acknowledged writes come back replayed, byte for byte; a write refused with a 503 that
    said it did not happen runs now for the first time. Returns how many writes that were never
    acknowledged turned out to have committed (their answer was lost or said "unknown")."""
    committed_unanswered = 0
    for item in resent:
        write = item.write
        if write.acknowledged:
            assert item.replayed, f"{write.key} was acknowledged, yet ran again"
            assert item.reply == write.reply, f"{write.key} replayed another answer"
            continue
        if write.status == 503 and any(words in write.reply.decode() for words in NOT_APPLIED):
            assert not item.replayed, f"{write.key}: its 503 said it did not happen, but it had"
        committed_unanswered += item.replayed
    return committed_unanswered


def expected_ledger(writes: list[Write], members: tuple[str, ...] = MEMBERS) -> dict[str, Any]:
    """Each member's balance and history length once every write applied exactly once."""
    return {
        member: {
            "balance": FUNDING + sum(w.effect for w in writes if w.member == member),
            "transactions": 1 + sum(1 for w in writes if w.member == member),
        }
        for member in members
    }


def actual_ledger(url: str, api_key: str, members: tuple[str, ...] = MEMBERS) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers=auth(api_key), timeout=30) as client:
        found = {}
        for member in members:
            balance = client.get(f"/v1/members/{member}/balance").json()["data"]["balance"]
            history = client.get(f"/v1/members/{member}/transactions", params={"per_page": 1})
            found[member] = {"balance": balance, "transactions": history.json()["meta"]["total"]}
        return found


def history_ids(url: str, api_key: str, members: tuple[str, ...] = MEMBERS) -> set[str]:
    """Every transaction id in the members' histories, all pages."""
    ids: set[str] = set()
    with httpx.Client(base_url=url, headers=auth(api_key), timeout=30) as client:
        for member in members:
            page = 1
            while True:
                params = {"per_page": 100, "page": page}
                answer = client.get(f"/v1/members/{member}/transactions", params=params).json()
                ids.update(row["transaction_id"] for row in answer["data"])
                if page >= answer["meta"]["total_pages"]:
                    break
                page += 1
    return ids


def assert_present(url: str, api_key: str, writes: list[Write]) -> None:
    """Every acknowledged write is there: as a transaction, and in its member's history."""
    acknowledged = [w for w in writes if w.acknowledged]
    listed = history_ids(url, api_key)
    with httpx.Client(base_url=url, headers=auth(api_key), timeout=30) as client:
        for write in acknowledged:
            response = client.get(f"/v1/transactions/{write.transaction_id}")
            assert response.status_code == 200, (write.key, response.text)
            found = response.json()["data"]
            assert (found["member_id"], found["points"]) == (write.member, write.effect)
            assert write.transaction_id in listed, f"{write.transaction_id} not in history"
