"""`/console` and the files it loads, every one of them from `static/` in this package.

Only the files named in `FILES` are served, each with its media type; the page itself is
`index.html`. Nothing is built: the app is plain ES modules, pinned in the repository.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

CONSOLE_PATH = "/console"
STATIC = Path(__file__).parent / "static"

_JS = "text/javascript; charset=utf-8"
FILES = {
    "app.js": _JS,
    "api.js": _JS,
    "dom.js": _JS,
    "forms.js": _JS,
    "charts.js": _JS,
    "members.js": _JS,
    "rewards.js": _JS,
    "webhooks.js": _JS,
    "report.js": _JS,
    "files.js": _JS,
    "program.js": _JS,
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The app's files, each at /console/<name>; nothing else of the folder is served."""


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


def _file(name: str) -> Route:
    async def serve(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type=FILES[name])

    return Route(f"{CONSOLE_PATH}/{name}", serve, methods=["GET"], name=f"console:{name}")


def console_routes() -> list[Route]:
    """The page and every file it loads."""
    return [Route(CONSOLE_PATH, page, methods=["GET"]), *(_file(name) for name in FILES)]
