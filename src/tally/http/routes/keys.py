"""Keys: what the calling key is (its id, its scope, its program).

Keys are made and revoked from the command line (`tally keys`), never through the API; this
route lets a client, the console among them, learn what the key it holds may do.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tally.domain import Scope
from tally.http import callers, outputs
from tally.http import schemas as s
from tally.http.routes.spec import RouteSpec


async def current_key(request: Request) -> Response:
    principal = await callers.principal_of(request, needs=Scope.READ)
    program = await callers.ledger(request).programs.get(principal.program_id)
    return outputs.json_response(outputs.ok(outputs.key_out(principal, program)))


ROUTES = (
    RouteSpec(
        method="GET",
        path="/v1/keys/current",
        operation_id="current_key",
        handler=current_key,
        summary="The key making this request: its id, scope and program",
        tag="Keys",
        response=s.KeyOut,
    ),
)
