"""For the Python client's tests: a real HTTP server in front of a real `tally serve` that
answers as told first (503, 429 with Retry-After, a dropped connection, a foreign error page),
then passes requests through; and a `sleep` that records how long the client would wait."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from tests.support import local_http_server

HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "host"}


@dataclass(frozen=True)
class Answer:
    """What the proxy does with one request: answer `status` itself (not passing it on), or
    pass it on first (`forward`) and then answer `status` instead of Tally's answer (0:
    Tally's answer itself, `PASS_ON`); a `status` of None answers nothing and drops the
    connection."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    forward: bool = False


def refusal(status: int, code: str, retry_after: str | None = None) -> Answer:
    """An answer in Tally's error envelope."""
    body = f'{{"success":false,"error":{{"code":"{code}","message":"Told to."}}}}'.encode()
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    return Answer(status, headers, body)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Proxy:
    """An HTTP server on 127.0.0.1 in front of `upstream`: each request takes the next planned
    `Answer`, and once the plan is used up is passed on unchanged."""

    upstream: str
    seen: list[Seen] = field(default_factory=list)
    _plan: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def plan(self, *answers: Answer) -> None:
        with self._lock:
            self._plan.extend(answers)

    def _handle(self, handler: BaseHTTPRequestHandler, client: httpx.Client) -> None:
        body = handler.rfile.read(int(handler.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.seen.append(Seen(handler.command, handler.path, headers, body))
            answer = self._plan.pop(0) if self._plan else Answer(0, forward=True)
        if answer.forward:
            sent = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
            response = client.request(handler.command, handler.path, headers=sent, content=body)
            if answer.status == 0:  # pass Tally's answer on
                kept = {k: v for k, v in response.headers.items() if k not in HOP_BY_HOP}
                answer = Answer(response.status_code, kept, response.content)
        if answer.status is None:
            handler.close_connection = True
            return
        handler.send_response(answer.status)
        for name, value in answer.headers.items():
            if name != "content-encoding":
                handler.send_header(name, value)
        handler.send_header("content-length", str(len(answer.body)))
        handler.end_headers()
        handler.wfile.write(answer.body)

    @contextlib.contextmanager
    def running(self) -> Iterator[Proxy]:
        proxy = self
        client = httpx.Client(base_url=self.upstream, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self, client)

            do_POST = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            with local_http_server(Handler) as self._server:
                yield self
        finally:
            client.close()


PASS_ON = Answer(0, forward=True)
LOST = Answer(None, forward=True)
"""Passed on to Tally, then the connection dropped: the client never hears Tally's answer."""


@dataclass
class Naps:
    """A `sleep` for the client that records each wait instead of waiting."""

    taken: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)

    async def nap(self, seconds: float) -> None:
        self.taken.append(seconds)
