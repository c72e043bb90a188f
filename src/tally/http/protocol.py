"""The HTTP/1.1 protocol `tally serve` runs: uvicorn's httptools protocol, with a deadline for a
request's headers and one write to the socket per answer.

uvicorn times out an idle kept-alive connection, but not one that opens and sends half its
headers, or sends them a byte at a time: each would hold a socket and a task for as long as
the client likes. Here a connection must finish a request's headers within `HEADERS_SECONDS`
of opening (or of starting that request), or it is closed. The body has its own deadline
(`inputs.body_bytes`); what the routes do is not timed here.

uvicorn writes an answer's head and its body to the socket in two calls; `_OneWritePerTurn`
joins them (bench/README.md, "One write per answer").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADERS_SECONDS = 30.0


class HeadersDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol`, closing a connection whose request headers take too long, and
    writing what one turn of the event loop answers in one call."""

    _headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, _OneWritePerTurn(transport, self.loop)))
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._headers_deadline is None:
            self._headers_deadline = self.loop.call_later(HEADERS_SECONDS, self._too_slow)

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
