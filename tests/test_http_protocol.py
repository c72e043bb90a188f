"""`tally serve`'s HTTP protocol (`tally/http/protocol.py`): one write per answer, the mark of a
body that has all arrived, and the deadline for a request's head.

uvicorn writes an answer's head and its body in two calls; the protocol joins what one turn of
the event loop writes into one call, one system call and one wake-up of the client per answer.
These run uvicorn's real protocol on a real event loop; the transport under it records what
would have gone to the socket (the one thing a test cannot see on a real socket: how many
sends it took). The head's deadline is cut to a twentieth of a second by a subclass, as a
deployment would configure it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from tally.http.protocol import BODY_ARRIVED, HeadersDeadlineProtocol

CHUNK = 20_000
CHUNKS = 10


class Socket:
    """A transport that records each write, as the kernel would see each send."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.changed = asyncio.Event()

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))
        self.changed.set()

    def close(self) -> None:
        self.closed = True
        self.changed.set()

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def sent(self) -> bytes:
        return b"".join(self.writes)


class QuickDeadline(HeadersDeadlineProtocol):
    headers_seconds = 0.05


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/` answers a short body in one message, `/stream` a long one in CHUNKS messages, and
    `/echo` the request's body, with whether it had all arrived when the app began (a header)
    and once it was read."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/echo":
        # The head goes first, saying whether the body had arrived; the body once it is read.
        before = b"%d" % bool(scope.get(BODY_ARRIVED))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-before", before)]}
        )
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        after = b"%d" % bool(scope.get(BODY_ARRIVED))
        await send({"type": "http.response.body", "body": after + b" " + body})
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for n in range(CHUNKS):
            await send({"type": "http.response.body", "body": b"%d" % n * CHUNK, "more_body": True})
            await asyncio.sleep(0)  # a producer that yields, like a database cursor
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok": true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connect(
    loop: asyncio.AbstractEventLoop, kind: type[HeadersDeadlineProtocol] = HeadersDeadlineProtocol
) -> tuple[HeadersDeadlineProtocol, Socket]:
    config = uvicorn.Config(app, http=kind, log_level="warning", timeout_keep_alive=60)
    config.load()
    protocol = kind(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    sock = Socket()
    protocol.connection_made(sock)  # type: ignore[arg-type]
    return protocol, sock


def until(loop: asyncio.AbstractEventLoop, sock: Socket, done: Any) -> None:
    """Run the loop until `done(sock)` holds (10 s at most)."""

    async def wait() -> None:
        while not done(sock):
            sock.changed.clear()
            await sock.changed.wait()

    loop.run_until_complete(asyncio.wait_for(wait(), 10))


def test_an_answer_leaves_in_one_write(loop: asyncio.AbstractEventLoop) -> None:
    protocol, sock = connect(loop)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    until(loop, sock, lambda s: s.writes)

    [only] = sock.writes
    assert only.startswith(b"HTTP/1.1 200 OK\r\n")
    assert only.endswith(b'\r\n\r\n{"ok": true}')
    protocol.connection_lost(None)


def test_pipelined_answers_each_leave_whole_and_in_order(loop: asyncio.AbstractEventLoop) -> None:
    protocol, sock = connect(loop)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 3)
    until(loop, sock, lambda s: s.sent().count(b"HTTP/1.1 200 OK") == 3)

    assert sock.sent() == sock.writes[0] * 3
    assert len(sock.writes) == 3
    protocol.connection_lost(None)


def test_a_closing_connection_sends_its_whole_answer_first(
    loop: asyncio.AbstractEventLoop,
) -> None:
    protocol, sock = connect(loop)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    until(loop, sock, lambda s: s.closed)

    assert sock.sent().endswith(b'\r\n\r\n{"ok": true}')
    protocol.connection_lost(None)


def test_a_long_streamed_answer_is_not_held_back(loop: asyncio.AbstractEventLoop) -> None:
    protocol, sock = connect(loop)
    protocol.data_received(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
    until(loop, sock, lambda s: s.sent().endswith(b"0\r\n\r\n"))

    head, _, chunked = sock.sent().partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    body = b""
    while True:
        size, _, chunked = chunked.partition(b"\r\n")
        if int(size, 16) == 0:
            break
        body, chunked = body + chunked[: int(size, 16)], chunked[int(size, 16) + 2 :]
    assert body == b"".join(b"%d" % n * CHUNK for n in range(CHUNKS))
    # Each chunk went out in the loop turn that made it: none waited for the next one.
    assert len(sock.writes) >= CHUNKS
    protocol.connection_lost(None)


def post(body: bytes, *, sent: int | None = None) -> bytes:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    return head + body[:sent]


def test_a_body_that_came_with_its_head_is_marked_arrived(loop: asyncio.AbstractEventLoop) -> None:
    protocol, sock = connect(loop)
    protocol.data_received(post(b'{"member_id": "m"}'))
    until(loop, sock, lambda s: s.sent().endswith(b"0\r\n\r\n"))

    assert b"\r\nx-before: 1\r\n" in sock.sent()
    assert b'1 {"member_id": "m"}' in sock.sent()
    protocol.connection_lost(None)


def test_a_body_still_on_its_way_is_marked_only_once_it_is_all_there(
    loop: asyncio.AbstractEventLoop,
) -> None:
    body = b'{"member_id": "m", "points": 10}'
    protocol, sock = connect(loop)
    protocol.data_received(post(body, sent=5))
    until(loop, sock, lambda s: s.writes)  # the app began, and sent its head
    assert b"\r\nx-before: 0\r\n" in sock.sent()

    protocol.data_received(body[5:])
    until(loop, sock, lambda s: s.sent().endswith(b"0\r\n\r\n"))
    assert b"1 " + body in sock.sent()
    protocol.connection_lost(None)


def test_a_head_left_unfinished_is_closed_at_its_deadline(loop: asyncio.AbstractEventLoop) -> None:
    protocol, sock = connect(loop, QuickDeadline)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost")
    until(loop, sock, lambda s: s.closed)

    assert sock.writes == []
    protocol.connection_lost(None)


def test_a_kept_alive_connections_next_head_has_its_deadline_too(
    loop: asyncio.AbstractEventLoop,
) -> None:
    protocol, sock = connect(loop, QuickDeadline)
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHo")
    until(loop, sock, lambda s: s.closed)

    assert sock.sent().count(b"HTTP/1.1 200 OK") == 1
    protocol.connection_lost(None)


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(
    loop: asyncio.AbstractEventLoop,
) -> None:
    protocol, sock = connect(loop, QuickDeadline)
    until(loop, sock, lambda s: s.closed)

    assert sock.writes == []
    protocol.connection_lost(None)
