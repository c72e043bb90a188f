"""The program: its settings (the default lifetime of new awards, whether awards enrol unknown
members), read and changed; and its report (the points liability and what moved in each period).

Keys and the program's creation are the command line's (`tally keys`), not the API's.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tally.commands import ProgramChanges
from tally.errors import invalid
from tally.http import callers, inputs, outputs
from tally.http import schemas as s
from tally.http.routes.spec import RouteSpec
from tally.rules.reports import Interval
from tally.service.reports import ReportQuery


async def get_program(request: Request) -> Response:
    program_id = await callers.reader(request)
    program = await callers.ledger(request).programs.get(program_id)
    return outputs.json_response(outputs.ok(outputs.program_out(program)))


async def patch_program(request: Request) -> Response:
    write = await callers.writer(request)
    body = inputs.decode(write.body, s.ProgramPatch)
    ledger = callers.ledger(request)
    days, enrol = body.points_expire_after_days, body.enrol_on_award
    changes = ProgramChanges(
        points_expire_after_days=None if days is msgspec.UNSET else days,
        expiry_set=days is not msgspec.UNSET,
        enrol_on_award=None if enrol is msgspec.UNSET else enrol,
    )
    if changes == ProgramChanges():  # nothing to change: answer as it is
        program = await ledger.programs.get(write.program_id)
    else:
        program = await ledger.programs.update(write.program_id, changes)
    return outputs.json_response(outputs.ok(outputs.program_out(program)))


async def get_report(request: Request) -> Response:
    program_id = await callers.reader(request)
    first = inputs.day_param(request, "from", end=False)
    last = inputs.day_param(request, "to", end=True)
    interval = inputs.query_value(request, "interval")
    if interval is None:
        interval = Interval.DAY.value
    elif interval not in Interval.__members__.values():
        raise invalid("interval", "interval must be one of day, week, month.")
    if first is not None and last is not None and first > last:
        raise invalid("from", f"from ({first}) must not be later than to ({last}).")
    report = await callers.ledger(request).reports.program_report(
        program_id, ReportQuery(first, last, Interval(interval))
    )
    return outputs.json_response(outputs.ok(outputs.report_out(report)))


ROUTES = (
    RouteSpec(
        method="GET",
        path="/v1/program",
        operation_id="get_program",
        handler=get_program,
        summary="The program's settings",
        tag="Program",
        response=s.ProgramOut,
    ),
    RouteSpec(
        method="PATCH",
        path="/v1/program",
        operation_id="update_program",
        handler=patch_program,
        summary="Change the program's settings",
        tag="Program",
        response=s.ProgramOut,
        body=s.ProgramPatch,
    ),
    RouteSpec(
        method="GET",
        path="/v1/program/report",
        operation_id="report",
        handler=get_report,
        summary="The program report: outstanding points, what expires soon, what moved per period",
        tag="Program",
        response=s.ReportOut,
        query=("from", "to", "interval"),
        query_schemas={
            "from": {
                "type": "string",
                "description": "The first UTC day (YYYY-MM-DD), or the UTC midnight it starts at.",
            },
            "to": {
                "type": "string",
                "description": "The last UTC day (YYYY-MM-DD, included), or the UTC midnight "
                "the range ends at (excluded).",
            },
            "interval": {"type": "string", "enum": ["day", "week", "month"], "default": "day"},
        },
    ),
)
