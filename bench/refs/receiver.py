"""A fast webhook receiver for the bench: every POST answers `204` and is counted.

`GET /count` answers the number of POSTs received so far (as plain text). It is served by the
same uvicorn as the references, one worker, so the count is one process's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from refs.common import serving

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

received = 0


async def app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    global received
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body", False):
        pass
    if scope["method"] == "POST":
        received += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    body = str(received).encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serving_app() -> Callable[[Message, Receive, Send], Awaitable[None]]:
    return serving(app)
