"""The HTTP/1.1 protocol `tally serve` runs: uvicorn's httptools protocol, with a deadline for a
request's headers.

uvicorn times out an idle kept-alive connection, but not one that opens and sends half its
headers, or sends them a byte at a time: each would hold a socket and a task for as long as
the client likes. Here a connection must finish a request's headers within `HEADERS_SECONDS`
of opening (or of starting that request), or it is closed. The body has its own deadline
(`inputs.body_bytes`); what the routes do is not timed here.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADERS_SECONDS = 30.0


class HeadersDeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol`, closing a connection whose request headers take too long."""

    _headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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
