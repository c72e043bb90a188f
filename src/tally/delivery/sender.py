"""One HTTP attempt of a delivery: POST the event's JSON, signed, and say what came of it.

An attempt is bounded whatever the receiver does: the whole of it (the address check, the
connection, the request and reading the answer) must end within the timeout; redirects are not
followed (a 3xx is a failure: a receiver that moved must be updated, not guessed); at most
`BODY_CAP` bytes of an answer are read, then the connection is dropped; the answer is never
decompressed. With the SSRF guard on (`addresses.py`) the request goes to the address that was
checked, with the URL's host in the `Host` header and, for https, as the TLS server name
(aiohttp's `server_hostname`), so the certificate is still verified against the host. aiohttp
pools connections by address, port and server name, so a TLS connection verified for one host
is never reused for another host that shares its address.

The client is aiohttp rather than httpx: a delivery costs the server's CPU beside the API's
writes (on SQLite the same cores as its one writer), and aiohttp's per-request cost was measured
at about a seventh of httpx's (120 against 850-900 µs, `bench/client_cost.py`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from tally.delivery.addresses import RefusedAddress, public_addresses

BODY_CAP = 64 * 1024
MAX_ERROR = 300


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
    """Makes attempts over one pool of connections (one per dispatcher). The session is made
    on the first attempt, inside the event loop that will use it."""

    def __init__(self, *, timeout: float, allow_private: bool, max_connections: int = 64) -> None:
        self.timeout = timeout
        self._allow_private = allow_private
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),  # a receiver's cookies are not kept
                auto_decompress=False,  # at most BODY_CAP bytes as sent, never inflated
                skip_auto_headers=("Accept-Encoding",),
                trust_env=False,  # no proxies from the environment: the address checked is the peer
            )
        return self._session

    async def send(self, url: str, *, body: str, headers: dict[str, str]) -> AttemptResult:
        try:
            async with asyncio.timeout(self.timeout):
                return await self._post(url, body, headers)
        except TimeoutError:
            return AttemptResult(None, f"no answer within {self.timeout:g} s")
        except RefusedAddress as refused:
            return AttemptResult(None, f"refused: {refused}")
        except aiohttp.ClientError as error:
            return AttemptResult(None, _short(failure(error)))

    async def _post(self, url: str, body: str, headers: dict[str, str]) -> AttemptResult:
        target, server_name = url, None
        sent = {**headers, "content-type": "application/json", "user-agent": "Tally-Webhooks/1"}
        if not self._allow_private:
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = (await public_addresses(host, port))[0]
            route = pinned(url, address)
            target, sent["host"], server_name = route.url, route.host_header, route.server_name
        async with self._client().post(
            target,
            data=body.encode(),
            headers=sent,
            allow_redirects=False,
            server_hostname=server_name,
        ) as response:
            read = 0
            async for chunk in response.content.iter_any():
                read += len(chunk)
                if read >= BODY_CAP:
                    response.close()  # the rest is never read: the connection is dropped
                    break
            code = response.status
            error = None if 200 <= code < 300 else f"the endpoint answered {code}"
            return AttemptResult(code, error, retry_after(response.headers.get("retry-after")))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def failure(error: aiohttp.ClientError) -> str:
    """What went wrong with an attempt that got no answer, in words (aiohttp's own messages
    name its classes, not what the receiver did)."""
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the endpoint closed the connection without an answer"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"could not connect to {error.host}:{error.port}: {error.os_error.strerror or error}"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the endpoint's answer was cut short"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"the endpoint's answer is not HTTP: {error.message}"
    return f"{type(error).__name__}: {error}"


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
