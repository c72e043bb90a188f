"""Limits (api.md section 10): the size of a request's headers, a token bucket per API key, and
a budget of failed authentications per client address, kept in this process's memory.

`HeaderLimits` refuses a request whose headers are more than `MAX_HEADERS` or larger than
`MAX_HEADER_BYTES` in all with `431 headers_too_large`, before anything reads them (the HTTP
parser itself sets no limit: a 1 MiB header used to reach the routes).

`RateLimits` is pure ASGI middleware in front of every `/v1` route. Each request takes a token
from the bucket of the key it presents (requests without one share their address's bucket);
an empty bucket is answered `429 rate_limited` before any work is done. Every 401 spends one
of the client address's failed authentications; once they are spent, that address's requests
are refused before their key is looked up, so random keys cannot flood the database, unless
the key they present has already authenticated in this process (a client behind the same
proxy as an attacker keeps working).

The limits are per process, not shared: with `--workers N`, or N servers, a key may send N
times its rate in all. Answers carry the headers of draft-ietf-httpapi-ratelimit-headers-11
(`RateLimit-Policy` and `RateLimit`, `Retry-After` on a 429). The clock is passed in, so tests
move it. What is counted of refusals is `metrics.py`'s (through `refused`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.config import Rate
from tally.errors import HeadersTooLarge, TallyError
from tally.http.errors import error_response
from tally.http.security import Header, add_headers

MAX_HEADERS = 200
MAX_HEADER_BYTES = 32 * 1024

KEY_POLICY = "default"
FAILED_AUTH_POLICY = "failed-auth"

# A status that shows the key got past authentication (a 404 without an endpoint is an
# unknown route: nothing was authenticated; 405 and 429 are answered before).
_NOT_PROOF = frozenset({401, 405, 429})


class HeaderLimits:
    """Pure ASGI middleware: `431 headers_too_large` for too many or too large headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            if len(headers) > MAX_HEADERS or (
                sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES
            ):
                refusal = HeadersTooLarge(
                    f"The request's headers must be at most {MAX_HEADERS} and "
                    f"{MAX_HEADER_BYTES // 1024} KiB in all."
                )
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RateLimited(TallyError):
    """More requests than the rate limit allows; `Retry-After` says when to try again."""

    code = "rate_limited"


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level  # tokens in the bucket at `stamp`
        self.stamp = stamp


class Buckets:
    """Token buckets of one policy by partition (a key, an address): at most `capacity`, the
    least recently used forgotten first (a forgotten bucket comes back full)."""

    def __init__(self, rate: Rate, *, name: str, capacity: int) -> None:
        self.rate = rate.per_second
        self.burst = rate.burst
        self.name = name
        self._capacity = capacity
        self._table: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self.policy = b'"%s";q=%d;w=%d' % (name.encode(), self.burst, self.window)
        self._state_prefix = b'"%s";r=' % name.encode()

    @property
    def window(self) -> int:
        """Seconds an empty bucket takes to fill (the draft's `w`: a whole second or more)."""
        return max(1, math.ceil(self.burst / self.rate))

    def find(self, partition: Hashable, now: float) -> _Bucket | None:
        """The partition's bucket, filled up to `now`, or None if it has none (it is full)."""
        bucket = self._table.get(partition)
        if bucket is not None:
            self._table.move_to_end(partition)
            bucket.level = min(self.burst, bucket.level + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        return bucket

    def add(self, partition: Hashable, now: float) -> _Bucket:
        """A full bucket for the partition (the least recently used goes when it is full)."""
        bucket = self._table[partition] = _Bucket(self.burst, now)
        if len(self._table) > self._capacity:
            self._table.popitem(last=False)
        return bucket

    def spend(self, partition: Hashable, now: float) -> _Bucket:
        """Take one token from the partition's bucket (made full first if it has none)."""
        bucket = self.find(partition, now) or self.add(partition, now)
        bucket.level -= 1
        return bucket

    def retry_after(self, bucket: _Bucket) -> int:
        """Whole seconds until the bucket holds a token again (at least 1)."""
        return max(1, math.ceil((1 - bucket.level) / self.rate))

    def state(self, bucket: _Bucket) -> bytes:
        """The draft's service limit: `r` tokens left, `t` seconds until the bucket is full."""
        left = bucket.level if bucket.level > 0 else 0.0
        # -(x // rate) with x <= 0 is ceil(-x / rate), without a call.
        return b"%s%d;t=%d" % (self._state_prefix, left, -((left - self.burst) // self.rate))

    def __len__(self) -> int:
        return len(self._table)


class RateLimits:
    """Pure ASGI middleware applying `per_key` and `failed_auth` to every `/v1` request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_key: Rate | None,
        failed_auth: Rate | None,
        clock: Callable[[], float],
        capacity: int = 100_000,
        refused: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self._clock = clock
        self._keys = Buckets(per_key, name=KEY_POLICY, capacity=capacity) if per_key else None
        self._failures = (
            Buckets(failed_auth, name=FAILED_AUTH_POLICY, capacity=capacity)
            if failed_auth
            else None
        )
        self._refused = refused or (lambda policy: None)
        # Keys that have authenticated in this process (by the hash of their secret), the
        # first proven forgotten first: they pass while their address is refused.
        self._proven: OrderedDict[Hashable, None] = OrderedDict()
        self._capacity = capacity
        policies = [b.policy for b in (self._keys, self._failures) if b is not None]
        self._policy_header: Header = (b"ratelimit-policy", b", ".join(policies))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        now = self._clock()
        client = scope.get("client")
        address = client[0] if client else ""
        secret = _bearer(scope["headers"])
        # A key's bucket is found by the hash of its secret (no secret is kept), a keyless
        # request's by its address.
        partition: Hashable = hash(secret) if secret else ("address", address)
        keys, failures = self._keys, self._failures
        bucket = keys.find(partition, now) if keys is not None else None
        failed = failures.find(address, now) if failures is not None else None
        if failures is not None and failed is not None and failed.level < 1:
            if partition not in self._proven:
                message = "Too many failed authentications from this address"
                await self._refuse(scope, receive, send, failures, failed, message)
                return
        if keys is not None:
            bucket = bucket or keys.add(partition, now)
            if bucket.level < 1:
                await self._refuse(scope, receive, send, keys, bucket, "Too many requests")
                return
            bucket.level -= 1

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                spent = failed
                if failures is not None:
                    if status == 401:
                        spent = failures.spend(address, now)
                        self._proven.pop(partition, None)
                    elif status < 500 and status not in _NOT_PROOF and "endpoint" in scope:
                        self._prove(partition)
                add_headers(message, self._headers(bucket, spent))
            await send(message)

        await self.app(scope, receive, send_with_limits)

    def _prove(self, partition: Hashable) -> None:
        proven = self._proven
        if partition not in proven:  # the oldest proof is forgotten first
            proven[partition] = None
            if len(proven) > self._capacity:
                proven.popitem(last=False)

    def _headers(self, bucket: _Bucket | None, failed: _Bucket | None) -> list[Header]:
        """The policies, and the state of the key's bucket (and of the address's failures
        once it has any: a full budget is not worth a header)."""
        states = []
        if bucket is not None and self._keys is not None:
            states.append(self._keys.state(bucket))
        if failed is not None and self._failures is not None:
            if failed.level < self._failures.burst:
                states.append(self._failures.state(failed))
        if not states:
            return [self._policy_header]
        return [self._policy_header, (b"ratelimit", b", ".join(states))]

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        buckets: Buckets,
        bucket: _Bucket,
        what: str,
    ) -> None:
        self._refused(buckets.name)
        retry = buckets.retry_after(bucket)
        response = error_response(
            RateLimited(
                f"{what}: the limit is {buckets.burst} at once and {buckets.rate:g} a second; "
                f"retry in {retry} s."
            )
        )
        # On a refusal `t` is when the next request is let in, as Retry-After says.
        state = b'"%s";r=0;t=%d' % (buckets.name.encode(), retry)
        response.raw_headers += [
            (b"retry-after", b"%d" % retry),
            self._policy_header,
            (b"ratelimit", state),
        ]
        await response(scope, receive, send)


def _bearer(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The secret of an `Authorization: Bearer <secret>` header, or b"" (as `inputs.bearer`)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, secret = value.partition(b" ")
            return secret.strip() if scheme.lower() == b"bearer" else b""
    return b""
