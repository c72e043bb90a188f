"""How `tally serve`'s HTTP protocol hands an answer to its socket (`tally/http/protocol.py`).

uvicorn writes an answer's head and its body in two calls; the protocol joins what one turn of
the event loop writes into one call, one system call and one wake-up of the client per answer.
These run uvicorn's real protocol on a real event loop; the transport under it records what
would have gone to the socket (the one thing a test cannot see on a real socket: how many
sends it took).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from tally.http.protocol import HeadersDeadlineProtocol

CHUNK = 20_000
CHUNKS = 10


class Socket:
    """A transport that records each write, as the kernel would see each send."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
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


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`/` answers a short body in one message, `/stream` a long one in CHUNKS messages."""
    if scope["type"] != "http":
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


def connect(loop: asyncio.AbstractEventLoop) -> tuple[HeadersDeadlineProtocol, Socket]:
    config = uvicorn.Config(app, http=HeadersDeadlineProtocol, log_level="warning")
    config.load()
    protocol = HeadersDeadlineProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=loop
    )
    sock = Socket(loop)
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
