"""The HTTP/1.1 protocol `tally serve` runs: uvicorn's httptools protocol, with a deadline for a
request's headers and one write to the socket per answer.

uvicorn times out an idle kept-alive connection, but not one that opens and sends half its
headers, or sends them a byte at a time: each would hold a socket and a task for as long as
the client likes. Here a connection must finish a request's headers within `HEADERS_SECONDS`
of opening (or of the read that left that request's head unfinished), or it is closed. The body
has its own deadline (`inputs.body_bytes`); what the routes do is not timed here.

uvicorn writes an answer's head and its body to the socket in two calls; `_OneWritePerTurn`
joins them. A body that has all arrived is marked so in the scope (`BODY_ARRIVED`): reading it
needs no timer. (bench/README.md, "One write per answer, and fewer timers".)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADERS_SECONDS = 30.0

BODY_ARRIVED = "tally.body_arrived"
"""Set (True) in a request's ASGI scope once its whole body has arrived: reading it then cannot
stall, and `inputs.body_bytes` needs no deadline for it."""


class HeadersDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol`, closing a connection whose request headers take too long, saying in
    the scope when a body has all arrived, and writing what one turn of the event loop answers
    in one call.

    Most requests arrive whole in one read: only a head still unfinished after a read arms the
    deadline (a timer armed and cancelled for every request cost about 2 µs of CPU each)."""

    headers_seconds = HEADERS_SECONDS
    _headers_deadline: asyncio.TimerHandle | None = None
    _in_head = False  # a request's head has begun and not yet ended

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _OneWritePerTurn(transport, self.loop)))
        self._arm()  # the first request's head is due from the start

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head:
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.scope[BODY_ARRIVED] = True  # type: ignore[literal-required]
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._headers_deadline is None:
            self._headers_deadline = self.loop.call_later(self.headers_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _too_slow(self) -> None:
        self._headers_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class _OneWritePerTurn:
    """A transport whose writes in one turn of the event loop leave in one system call.

    uvicorn writes an answer's head and its body apart: two sends, and two wake-ups of the
    client, for every answer. Here they are joined and written once the loop has run what was
    ready (or at once past `HELD`, so a large body still meets the socket's flow control).
    Everything but writing and closing is the transport's own."""

    __slots__ = ("_transport", "_loop", "_held", "_size")

    HELD = 1 << 16
    """Bytes held back at most before they are written."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(data)
        self._size += len(data)
        if self._size >= self.HELD:
            self._flush()

    def writelines(self, lines: Iterable[bytes]) -> None:
        for data in lines:
            self.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def _flush(self) -> None:
        held = self._held
        if held:
            data = held[0] if len(held) == 1 else b"".join(held)
            held.clear()
            self._size = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
