"""The headers every response carries for a browser's sake, and CORS when it is asked for.

`SecurityHeaders` is the outermost middleware, so every answer passes through it: successes,
errors, 404s, 429s and the 500 of a bug. Its header lists are built once; a request costs one
look at its path and one `extend`. Cross-origin requests are refused by browsers unless
`TALLY_CORS_ORIGINS` names the origins allowed (`cors_middleware`, Starlette's own).
What is logged and counted per request is `observability.py`'s; rate limits are `limits.py`'s.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tally.console.routes import CONSOLE_PATH

Header = tuple[bytes, bytes]

API_POLICY = b"default-src 'none'; frame-ancestors 'none'"
"""JSON needs nothing loaded, run or framed."""

DOCS_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    b"base-uri 'none'; form-action 'none'"
)
"""/docs: Swagger UI's script and stylesheet from this server, no inline script (its start is
a file of its own); inline styles and `data:` images, which it sets as it renders; requests
to this server only (the document and "Try it out")."""

CONSOLE_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; "
    b"require-trusted-types-for 'script'; trusted-types 'none'"
)
"""/console: its modules, stylesheet and icon from this server, requests to this server's API;
no inline script or style, no form that submits anywhere (a form submitted without its script
would otherwise put what was typed into a URL), and no HTML parsed from strings
(`require-trusted-types-for`: the app builds every element with DOM calls, so data from the
API is only ever text)."""

_EVERYWHERE: list[Header] = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_NO_STORE = (b"cache-control", b"no-store")
_REVALIDATE = (b"cache-control", b"no-cache")
_API = [*_EVERYWHERE, (b"content-security-policy", API_POLICY), _NO_STORE]
_DOCS_PAGE = [*_EVERYWHERE, (b"content-security-policy", DOCS_POLICY), _REVALIDATE]
_DOCS_ASSET = [*_EVERYWHERE, (b"content-security-policy", API_POLICY), _REVALIDATE]
_CONSOLE_PAGE = [
    *_EVERYWHERE,
    (b"content-security-policy", CONSOLE_POLICY),
    (b"cross-origin-opener-policy", b"same-origin"),
    _REVALIDATE,
]
_CONSOLE_FILE = [*_EVERYWHERE, (b"content-security-policy", API_POLICY), _REVALIDATE]

DOCS_PATH = "/docs"

EXPOSED_HEADERS = [
    "Idempotent-Replayed",
    "Retry-After",
    "RateLimit-Policy",
    "RateLimit",
    "X-Request-Id",
]
"""What a browser script may read of an answer, when CORS is on."""


def headers_for(path: str) -> list[Header]:
    """The security headers of a response to `path`: answers are never stored by a cache
    (they hold balances), except the documentation's and the console's files, which hold no
    data and are revalidated."""
    if path.startswith(DOCS_PATH):
        return _DOCS_PAGE if path == DOCS_PATH else _DOCS_ASSET
    if path == CONSOLE_PATH:
        return _CONSOLE_PAGE
    if path.startswith(CONSOLE_PATH + "/"):
        return _CONSOLE_FILE
    return _API


class SecurityHeaders:
    """Pure ASGI middleware adding `headers_for(path)` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_headers(message, extra)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_headers(message: Message, extra: list[Header]) -> None:
    """Append `extra` to a response's start message (in place when it holds a list, as
    Starlette's responses do: each response has a list of its own)."""
    headers = message.get("headers")
    if type(headers) is list:
        headers.extend(extra)
    else:
        message["headers"] = [*(headers or ()), *extra]


def cors_middleware(origins: tuple[str, ...]) -> list[Middleware]:
    """Starlette's CORS middleware for `origins` (`*` for any), or nothing when none is given:
    without it a browser refuses every cross-origin answer."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    ]
