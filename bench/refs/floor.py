"""The floor: one Starlette route that validates the award body, under Tally's server settings.

Everything Tally does beyond this (auth, the database, rendering) is what its figures add.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from refs.common import answer, serving


async def award(request: Request) -> Response:
    status, body = answer(await request.body())
    return Response(body, status_code=status, media_type="application/json")


app = Starlette(routes=[Route("/v1/points/award", award, methods=["POST"])])


def serving_app() -> Starlette:
    return serving(app)
