"""One HTTP attempt of a delivery: POST the event's JSON, signed, and say what came of it.

An attempt is bounded whatever the receiver does: the whole of it (the address check, the
connection, the request and reading the answer) must end within the timeout; redirects are not
followed (a 3xx is a failure: a receiver that moved must be updated, not guessed); at most
`BODY_CAP` bytes of an answer are read, then the connection is dropped. With the SSRF guard on
(`addresses.py`) the request goes to the address that was checked, with the URL's host in the
`Host` header and, for https, as the TLS server name (httpcore's `sni_hostname` extension), so
the certificate is still verified against the host. Connections to pinned addresses are pooled
per host, so a TLS connection verified for one host is never reused for another host that
shares its address.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from tally.delivery.addresses import RefusedAddress, public_addresses

BODY_CAP = 64 * 1024
MAX_ERROR = 300
MAX_POOLS = 256  # hosts whose connections are kept (the least recently used are closed)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt came to: the receiver's status (None if none came back), why it
    failed, and the receiver's `Retry-After` in seconds."""

    status_code: int | None
    error: str | None = None
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """`410 Gone`: the receiver asks for the endpoint to be disabled."""
        return self.status_code == 410


class Sender:
    """Makes attempts over one pool of connections (one per dispatcher)."""

    def __init__(self, *, timeout: float, allow_private: bool, max_connections: int = 64) -> None:
        self.timeout = timeout
        self._allow_private = allow_private
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=32)
        self._client = self._new_client()
        self._by_host: dict[str, httpx.AsyncClient] = {}  # with the guard on
        self._closing: set[asyncio.Task[None]] = set()

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            follow_redirects=False,
            timeout=httpx.Timeout(self.timeout),
            limits=self._limits,
            trust_env=False,  # no proxies from the environment: the address checked is the peer
        )

    def _client_for(self, host: str) -> httpx.AsyncClient:
        """The pool of connections to `host`'s pinned addresses (most recently used last)."""
        client = self._by_host.pop(host, None)
        if client is None:
            client = self._new_client()
            if len(self._by_host) >= MAX_POOLS:
                evicted = self._by_host.pop(next(iter(self._by_host)))
                # Closed once any attempt still using it has had its time.
                asyncio.get_running_loop().call_later(self.timeout + 1, self._close, evicted)
        self._by_host[host] = client
        return client

    def _close(self, client: httpx.AsyncClient) -> None:
        task = asyncio.create_task(client.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def send(self, url: str, *, body: str, headers: dict[str, str]) -> AttemptResult:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(url, body, headers)
        except TimeoutError:
            return AttemptResult(None, f"no answer within {self.timeout:g} s")
        except RefusedAddress as refused:
            return AttemptResult(None, f"refused: {refused}")
        except httpx.HTTPError as error:
            return AttemptResult(None, _short(f"{type(error).__name__}: {error}"))

    async def _post(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        target, extensions, client = url, {}, self._client
        sent = {**headers, "content-type": "application/json", "user-agent": "Tally-Webhooks/1"}
        if not self._allow_private:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = (await public_addresses(host, port))[0]
            route = pinned(url, address)
            target, sent["host"] = route.url, route.host_header
            if route.server_name is not None:
                extensions["sni_hostname"] = route.server_name
            client = self._client_for(host)
        request = client.build_request(
            "POST", target, content=body.encode(), headers=sent, extensions=extensions
        )
        response = await client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read >= BODY_CAP:
                    break  # the rest is never read: closing drops the connection
        finally:
            await response.aclose()
        code = response.status_code
        error = None if 200 <= code < 300 else f"the endpoint answered {code}"
        return AttemptResult(code, error, retry_after(response.headers.get("retry-after")))

    async def aclose(self) -> None:
        for client in [self._client, *self._by_host.values()]:
            await client.aclose()
        self._by_host.clear()


@dataclass(frozen=True, slots=True)
class Pinned:
    """A request to `url`'s host sent to one of its addresses instead: the URL to connect to,
    the `Host` header, and the TLS server name (https only) the certificate is checked for."""

    url: str
    host_header: str
    server_name: str | None


def pinned(url: str, address: str) -> Pinned:
    parts = urlsplit(url)
    userinfo, _, host_and_port = parts.netloc.rpartition("@")
    netloc = (userinfo + "@" if userinfo else "") + (f"[{address}]" if ":" in address else address)
    if parts.port is not None:
        netloc += f":{parts.port}"
    server_name = parts.hostname if parts.scheme == "https" else None
    return Pinned(urlunsplit(parts._replace(netloc=netloc)), host_and_port, server_name)


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: a number of seconds, or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"
