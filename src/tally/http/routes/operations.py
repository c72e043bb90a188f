"""Operations (api.md section 11): is the process alive, can it serve, what has it served.

`/healthz` answers while the process runs; `/readyz` asks the database one question through
the store (the schema must answer it: reachable and migrated); `/metrics` renders the app's
registry (`http/metrics.py`). None takes a key or counts against a rate limit: they are
outside `/v1`, for load balancers and scrapers on the operator's network.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response

from tally.errors import Unavailable
from tally.http import outputs
from tally.http import schemas as s
from tally.http.errors import error_response
from tally.http.metrics import CONTENT_TYPE, Metrics, cause_of
from tally.http.routes.spec import RouteSpec
from tally.ports import Store, Tx

READY_TIMEOUT_SECONDS = 2.0
"""How long /readyz waits for the database before it says it is not ready."""

log = logging.getLogger("tally")


async def healthz(request: Request) -> Response:
    return outputs.json_response(outputs.ok(s.HealthOut("ok")))


def _programs(tx: Tx) -> int:
    return tx.programs.count()


async def readyz(request: Request) -> Response:
    store: Store = request.app.state.store
    try:
        await asyncio.wait_for(store.lookup(_programs), READY_TIMEOUT_SECONDS)
    except Exception as error:  # whatever it is, this process cannot serve the API now
        cause = cause_of(error) if isinstance(error, Unavailable) else type(error).__name__
        metrics: Metrics = request.app.state.metrics
        metrics.unavailable(cause)
        log.warning("not ready: the database did not answer (%s)", cause)
        return error_response(
            Unavailable("The database is unreachable, busy or not migrated; not ready.")
        )
    return outputs.json_response(outputs.ok(s.HealthOut("ready")))


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)


ROUTES = (
    RouteSpec(
        method="GET",
        path="/healthz",
        operation_id="health",
        handler=healthz,
        summary="Whether the process is alive",
        tag="Operations",
        response=s.HealthOut,
        auth=False,
    ),
    RouteSpec(
        method="GET",
        path="/readyz",
        operation_id="ready",
        handler=readyz,
        summary="Whether the database is reachable and migrated",
        tag="Operations",
        response=s.HealthOut,
        auth=False,
        errors=("unavailable",),
    ),
    RouteSpec(
        method="GET",
        path="/metrics",
        operation_id="metrics",
        handler=metrics,
        summary="Prometheus metrics of this process",
        tag="Operations",
        response=str,
        media_type="text/plain",
        auth=False,
    ),
)
