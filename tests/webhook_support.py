"""Webhook test helpers: a real receiver on 127.0.0.1 that records what it is sent and answers
as told, and dispatchers run in-process on stores of their own (as another process would)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tally.delivery.dispatcher import Dispatcher
from tally.delivery.sender import Sender
from tally.domain import Scope
from tally.maintenance import create_key, run_async, verify
from tally.ports import Store
from tally.service import Ledger, WebhookPolicy
from tally.storage import open_store
from tests.support import Api, FakeClock, local_http_server, serve_app

FAST = (0.0, 0.0, 0.0)  # three attempts, each at once


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1. Each path answers from its queue of answers (`plan`), then
    with its default (`always`, 200 unless told). An answer is a status code, or `"hang"` (no
    answer until the receiver stops), `"slow"` (200 after 50 ms), `"close"` (drop the
    connection), `"huge"` (500 with a body of 64 MiB) or `"redirect"` (302 to /elsewhere)."""

    received: list[Received] = field(default_factory=list)
    _plans: dict[str, list[Any]] = field(default_factory=dict)
    _always: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def plan(self, path: str, *answers: Any) -> None:
        with self._lock:
            self._plans.setdefault(path, []).extend(answers)

    def always(self, path: str, answer: Any) -> None:
        with self._lock:
            self._always[path] = answer

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def event_ids(self, path: str) -> Counter[str]:
        return Counter(r.headers["webhook-id"] for r in self.at(path))

    def _answer(self, path: str) -> Any:
        with self._lock:
            queued = self._plans.get(path)
            if queued:
                return queued.pop(0)
            return self._always.get(path, 200)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length", "0"))
        body = handler.rfile.read(length)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        path = handler.path
        with self._lock:
            self.received.append(Received(path, headers, body))
        answer = self._answer(path)
        if answer == "hang":
            self._stopping.wait(60)
            handler.close_connection = True
            return
        if answer == "slow":
            self._stopping.wait(0.05)
            answer = 200
        if answer == "close":
            handler.close_connection = True
            return
        if answer == "huge":
            handler.send_response(500)
            handler.send_header("content-type", "application/octet-stream")
            handler.end_headers()
            chunk = b"x" * 65536
            with contextlib.suppress(OSError):
                for _ in range(1024):
                    handler.wfile.write(chunk)
            handler.close_connection = True
            return
        if answer == "redirect":
            handler.send_response(302)
            handler.send_header("location", "/elsewhere")
            handler.send_header("content-length", "0")
            handler.end_headers()
            return
        handler.send_response(int(answer))
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")

    @contextlib.contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with local_http_server(Handler) as self._server:
            try:
                yield self
            finally:
                self._stopping.set()  # before the shutdown: hanging answers let go


def hooks_api(store: Store, clock: FakeClock) -> Iterator[Api]:
    """The API of program `acme`, allowing endpoints on loopback (the receiver's); the ledger
    must add up afterwards."""
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock, webhooks_allow_private=True) as client:
        yield Api(client, key, store=store, clock=clock)
    assert verify(store) == []


def policy(**fields: Any) -> WebhookPolicy:
    return WebhookPolicy(**{"allow_private": True, "schedule": FAST, **fields})


def dispatcher_for(
    ledger: Ledger, *, timeout: float = 5.0, allow_private: bool = True, **options: Any
) -> tuple[Dispatcher, Sender]:
    sender = Sender(timeout=timeout, allow_private=allow_private)
    return Dispatcher(ledger.webhooks, sender, poll_seconds=0.02, **options), sender


def deliver_once(
    database_url: str,
    clock: FakeClock,
    *,
    timeout: float = 5.0,
    allow_private: bool = True,
    **fields: Any,
) -> None:
    """`tally deliver --once` in-process, on a store of its own, with `clock`."""
    store = open_store(database_url)
    try:
        ledger = Ledger(store, clock=clock, webhooks=policy(allow_private=allow_private, **fields))
        dispatcher, sender = dispatcher_for(ledger, timeout=timeout, allow_private=allow_private)

        async def main() -> None:
            try:
                await dispatcher.run_once()
            finally:
                await sender.aclose()

        run_async(store, main)
    finally:
        store.close()


@contextlib.contextmanager
def dispatching(
    database_url: str, clock: Any, *, timeout: float = 5.0, **fields: Any
) -> Iterator[Dispatcher]:
    """A dispatcher running in a thread of its own, on a store of its own, until the block
    ends."""
    store = open_store(database_url)
    ledger = Ledger(store, clock=clock, webhooks=policy(**fields))
    dispatcher, sender = dispatcher_for(ledger, timeout=timeout)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    task: list[asyncio.Task[None]] = []

    async def main() -> None:
        task.append(asyncio.current_task())  # type: ignore[arg-type]
        started.set()
        try:
            await dispatcher.run()
        finally:
            await sender.aclose()
            await store.aclose()

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield dispatcher
    finally:
        loop.call_soon_threadsafe(task[0].cancel)
        thread.join(timeout=30)
        loop.close()
        store.close()


def later(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds=seconds)


ONE_DAY = timedelta(days=1)
