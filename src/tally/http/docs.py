"""`/docs`: Swagger UI on the OpenAPI document, every file of it served by Tally itself.

The page loads nothing from another origin: Swagger UI's script and stylesheet are vendored in
`static/swagger-ui/` (which version, and how it was fetched, is in the README there) and its
start is a script file of its own, so the page's Content-Security-Policy (`security.py`) can
allow scripts from this server only. The document itself is built in `openapi.py`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

SWAGGER_UI_VERSION = "5.35.0"
ASSETS = Path(__file__).parent / "static" / "swagger-ui"

_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "tally-init.js": "text/javascript; charset=utf-8",
}
"""The files the page loads, each at /docs/<name>; nothing else of the folder is served."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Tally API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/tally-init.js"></script>
</body>
</html>
"""


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


def _asset(name: str) -> Route:
    async def serve(request: Request) -> Response:
        return FileResponse(ASSETS / name, media_type=_MEDIA_TYPES[name])

    return Route(f"/docs/{name}", serve, methods=["GET"], name=f"docs:{name}")


def docs_routes() -> list[Route]:
    """The page and the assets it loads."""
    return [Route("/docs", page, methods=["GET"]), *(_asset(name) for name in _MEDIA_TYPES)]
