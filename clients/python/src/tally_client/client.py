"""`TallyClient` and `AsyncTallyClient`: the same operations (`operations.py`), sent over httpx
with the same requests (`wire.py`) and the same retries (`retries.py`); only the sending loop
is written twice, once blocking and once awaiting."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import ParamSpec, Self, TypeVar
from urllib.parse import urlsplit

import httpx

from tally_client import wire
from tally_client.calls import Call, Page, Pages
from tally_client.operations import Operations
from tally_client.retries import Retries
from tally_client.version import __version__

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
"""Up to 5 s to connect and 30 s for each read or write: enough for a bulk award of 10,000."""
DEFAULT_MAX_RETRIES = 3


def _root(base_url: str) -> str:
    """`base_url`, refused when it ends in `/v1` (every path the client sends starts with it)."""
    if urlsplit(base_url).path.rstrip("/").endswith("/v1"):
        raise ValueError(f"base_url is the server's root, without /v1: not {base_url!r}")
    return base_url


def _headers(api_key: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {api_key}",
        "Accept": "application/json",
        "User-Agent": f"tally-client-python/{__version__}",
    }


class TallyClient(Operations):
    """A client of one program of a Tally server, blocking.

    `base_url` is the server's root (`http://localhost:8000`, without `/v1`). Use it as a
    context manager, or `close()` it. `sleep` is how it waits between retries (tests pass
    one that records the waits).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = httpx.Client(
            base_url=_root(base_url),
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )
        self._retries = Retries(max_retries=max_retries)
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        request = wire.request(self._http, call)
        attempt = 0
        while True:
            try:
                response = self._http.send(request)
            except httpx.TransportError as error:
                delay = self._retries.after_failure(request.method, error, attempt)
                if delay is None:
                    raise wire.failure(request, error) from error
            else:
                delay = self._retries.after_answer(response, wire.error_code(response), attempt)
                if delay is None:
                    return wire.result(call, response)
            self._sleep(delay)
            attempt += 1

    def _iterate(self, pages: Pages[T]) -> Iterator[T]:
        seen: set[object] = set()
        call: Call[Page[T]] | None = pages.first
        while call is not None:
            page = self._send(call)
            yield from page.unseen(pages, seen)
            call = page.next_call(call)

    def _bind(self, build: Callable[P, Call[T]]) -> Callable[P, T]:
        @functools.wraps(build)
        def send(*args: P.args, **kwargs: P.kwargs) -> T:
            return self._send(build(*args, **kwargs))

        return send

    def _bind_pages(self, build: Callable[P, Pages[T]]) -> Callable[P, Iterator[T]]:
        @functools.wraps(build)
        def iterate(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
            return self._iterate(build(*args, **kwargs))

        return iterate


class AsyncTallyClient(Operations):
    """A client of one program of a Tally server, for asyncio: the methods of `TallyClient`,
    awaited (`await client.award(...)`), and listings iterated with `async for`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=_root(base_url),
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
        )
        self._retries = Retries(max_retries=max_retries)
        self._sleep = sleep

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        request = wire.request(self._http, call)
        attempt = 0
        while True:
            try:
                response = await self._http.send(request)
            except httpx.TransportError as error:
                delay = self._retries.after_failure(request.method, error, attempt)
                if delay is None:
                    raise wire.failure(request, error) from error
            else:
                delay = self._retries.after_answer(response, wire.error_code(response), attempt)
                if delay is None:
                    return wire.result(call, response)
            await self._sleep(delay)
            attempt += 1

    async def _iterate(self, pages: Pages[T]) -> AsyncIterator[T]:
        seen: set[object] = set()
        call: Call[Page[T]] | None = pages.first
        while call is not None:
            page = await self._send(call)
            for item in page.unseen(pages, seen):
                yield item
            call = page.next_call(call)

    def _bind(self, build: Callable[P, Call[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(build)
        async def send(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self._send(build(*args, **kwargs))

        return send

    def _bind_pages(self, build: Callable[P, Pages[T]]) -> Callable[P, AsyncIterator[T]]:
        @functools.wraps(build)
        def iterate(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
            return self._iterate(build(*args, **kwargs))

        return iterate
