"""Every request's id, its one JSON log line and its timing, and the log of a bug.

`Observability` is pure ASGI middleware just inside `security.SecurityHeaders`, around
everything else (Starlette's error middleware included): it takes the `X-Request-Id` a client
sent when it is a sane token (1 to 128 visible ASCII characters) or makes one, returns it on
every answer, logs the request to the `tally.access` logger (`timestamp, level, request_id,
method, route, status, duration_ms`) and hands its duration to `metrics.py`. A bug's 500 is
answered by the app's error handler (`app.py`); it is logged here, with the request id.

Nothing here reads a header other than `X-Request-Id`, or a body: keys, secrets and bodies
never reach a log. `configure_logging` makes the `tally` loggers write one JSON object a line
to standard error; `tally serve` calls it (tests and embedders keep their own logging).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import msgspec
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.http.metrics import Metrics
from tally.http.security import add_headers

log = logging.getLogger("tally")
access = logging.getLogger("tally.access")

REQUEST_ID_KEY = "tally.request_id"
"""Where in the ASGI scope a request's id is kept for the rest of the app (bytes)."""

UNMATCHED = "unmatched"
"""The route label of a request no route matched (its raw path is never a label)."""

_SANE_ID = re.compile(rb"[\x21-\x7e]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Observability:
    """Pure ASGI middleware: request ids, access log lines, request metrics, bugs logged."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self._metrics = metrics
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope["headers"])
        scope[REQUEST_ID_KEY] = request_id
        status = 0

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                add_headers(message, [(b"x-request-id", request_id)])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            # Starlette's error middleware has answered 500 and raised it on: the bug is
            # logged here, once, with the request id, and goes no further. (Were an answer
            # left half sent, the server would drop the connection; left unsent, answer 500.)
            log.exception(
                "unhandled error",
                extra={"fields": {"request_id": request_id.decode(), **_where(scope)}},
            )
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope, status)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            shown = status or 499  # nothing was answered: the client went away
            self._metrics.observe(method, route, shown, seconds)
            if access.isEnabledFor(logging.INFO):
                # makeRecord and handle rather than info(): info() walks the stack for the
                # caller's file and line, which an access line does not show.
                fields = {
                    "request_id": request_id.decode(),
                    "method": method,
                    "route": route,
                    "status": shown,
                    "duration_ms": round(seconds * 1000, 3),
                }
                access.handle(
                    access.makeRecord(
                        access.name,
                        logging.INFO,
                        "",
                        0,
                        "request",
                        (),
                        None,
                        extra={"fields": fields},
                    )
                )

    def _route(self, scope: Scope, status: int) -> str:
        """The template of the route that served the request. One refused before the router
        saw it (a 429) is matched here; a 404 of the router matched none."""
        route = scope.get("route")
        if route is not None:
            return str(route.path)
        if status != 404:
            for candidate in self._routes:
                if candidate.matches(scope)[0] is not Match.NONE:
                    return str(getattr(candidate, "path", UNMATCHED))
        return UNMATCHED


def _request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"x-request-id":
            if _SANE_ID.fullmatch(value):
                return value
            break
    # Not os.urandom: it releases the GIL for its system call, and winning it back behind the
    # SQLite commit thread cost awards ~30 µs of CPU each (bench/inprocess.py). An id needs to
    # be unique, not secret.
    return b"%032x" % random.getrandbits(128)


def _where(scope: Scope) -> dict[str, Any]:
    route = scope.get("route")
    return {"method": scope["method"], "route": route.path if route else UNMATCHED}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: `timestamp` (UTC, milliseconds), `level`, `logger`, `message`,
    the record's `fields` (`extra={"fields": {...}}`) and, for an error, `exception` (the
    traceback, newlines escaped like any JSON string)."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        second = int(created)
        cached = self._second
        if cached[0] != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            cached = self._second = (second, text)
        line: dict[str, Any] = {
            "timestamp": f"{cached[1]}.{int((created - second) * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line, enc_hook=str).decode()


class OneWritePerLoopTurn(logging.StreamHandler):  # type: ignore[type-arg]
    """Lines written into the stream's buffer, which goes out once the event loop has run
    what was ready: the requests answered in one turn of the loop share one write (a write
    a line cost each request a system call). Outside a loop, and for a warning or an error,
    at once."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        # The loop a write is due on, and its callback.
        self._due: tuple[asyncio.AbstractEventLoop, asyncio.Handle] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self._write()

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a thread, the process exiting): at once
            self._write()
            return
        if self._due is None or self._due[0] is not loop:
            self._due = (loop, loop.call_soon(self._write))

    def close(self) -> None:
        self._write()
        super().close()

    def _write(self) -> None:
        due, self._due = self._due, None
        if due is not None:
            due[1].cancel()  # written now: not again on the loop's next turn
        super().flush()


def configure_logging(stream: TextIO | None = None) -> logging.Handler:
    """Make the `tally` loggers (access lines included) write JSON lines to `stream` (standard
    error, through a buffer of its own, by default) at INFO and above; once per process,
    whatever the number of calls. For a serving process: it also turns off the logging
    module's per-record thread and process lookups, process-wide."""
    for handler in log.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return handler
    if stream is None:
        # stderr is line-buffered (a system call a line): write through a buffer instead.
        stream = open(  # lives as long as the process
            os.dup(sys.stderr.fileno()), "w", buffering=1 << 16, encoding="utf-8"
        )
    # The logging module's own switches (its documentation's "Optimization"): no line shows
    # a thread, a process id or a multiprocessing name, so records need not look them up.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = OneWritePerLoopTurn(stream)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler
