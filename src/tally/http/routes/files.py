"""CSV files over HTTP: an awards file imported (`POST /v1/imports/awards`, the same import as
`tally import awards`) and a program's transactions exported (`GET /v1/exports/transactions`,
streamed page by page)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tally.commands import ImportOutcome, RowStatus
from tally.csvfiles import awards, transactions
from tally.csvfiles.cells import safe
from tally.errors import Detail, ValidationFailed
from tally.http import callers, inputs, outputs
from tally.http import schemas as s
from tally.http.routes.spec import RouteSpec

CSV = "text/csv; charset=utf-8"


async def import_awards(request: Request) -> Response:
    write = await callers.writer(request, media="text/csv")
    idempotency = inputs.idempotency(request, write.body)
    command = await run_in_threadpool(awards.read, write.body)
    reply = await callers.ledger(request).imports.award_file_once(
        write.program_id,
        command,
        created_by=write.key_id,
        idempotency=idempotency,
        render=_rendered,
    )
    if "text/csv" in request.headers.get("accept", "") and reply.status == 200:
        # The answer is kept (under an Idempotency-Key) as JSON; a CSV is made from it.
        answer = msgspec.json.decode(reply.body, type=_Answer).data
        headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
        return Response(_results_csv(answer), media_type=CSV, headers=headers)
    return outputs.reply_response(reply)


def _rendered(outcome: ImportOutcome) -> tuple[int, bytes]:
    if outcome.refused:
        raise _refusal(outcome)
    return 200, outputs.ok(_import_out(outcome))


class _Answer(msgspec.Struct):
    data: s.ImportOut


def _results_csv(answer: s.ImportOut) -> str:
    buffer = io.StringIO()
    rows = csv.writer(buffer, lineterminator="\n")
    rows.writerow(awards.RESULT_COLUMNS)
    for r in answer.results:
        error = r.error or s.ImportErrorOut("", "")
        rows.writerow(
            [r.line, safe(r.member_id or ""), r.status, r.transaction_id or "", error.code]
            + [safe(error.message)]
        )
    return buffer.getvalue()


def _refusal(outcome: ImportOutcome) -> ValidationFailed:
    failed = [r for r in outcome.results if r.error is not None]
    applied = outcome.count(RowStatus.OK)
    tail = (
        f"the {applied} row(s) before it were applied, and sending the same file again replays "
        "them and tries the rest"
        if applied
        else "nothing was applied"
    )
    details = [
        Detail(
            awards.describe(r.error),
            next((d.field for d in r.error.details if d.field), None),
            {"line": r.line, "member_id": r.member_id, "code": r.error.code},
        )
        for r in failed
        if r.error is not None
    ]
    return ValidationFailed(
        f"{len(failed)} of {len(outcome.results)} rows are bad; {tail}.", details=details
    )


def _import_out(outcome: ImportOutcome) -> s.ImportOut:
    return s.ImportOut(
        rows=len(outcome.results),
        awarded=outcome.count(RowStatus.OK),
        replayed=outcome.count(RowStatus.REPLAYED),
        results=[
            s.ImportRowOut(
                r.line,
                r.member_id,
                r.status.value,
                r.transaction_id,
                None
                if r.error is None
                else s.ImportErrorOut(r.error.code, awards.describe(r.error)),
            )
            for r in outcome.results
        ],
    )


async def export_transactions(request: Request) -> Response:
    program_id = await callers.reader(request)
    query = inputs.history_query(request)
    pages = callers.ledger(request).exports.transactions(program_id, query)

    async def lines() -> AsyncIterator[str]:
        yield transactions.header()
        async for page in pages:
            yield transactions.rows_text(page)

    disposition = {"Content-Disposition": 'attachment; filename="transactions.csv"'}
    return StreamingResponse(lines(), media_type=CSV, headers=disposition)


ROUTES = (
    RouteSpec(
        method="POST",
        path="/v1/imports/awards",
        operation_id="import_awards",
        handler=import_awards,
        summary="Import an awards file (CSV): every row checked, then all applied or none",
        tag="Files",
        response=s.ImportOut,
        body_media_type="text/csv",
        errors=("idempotency_in_progress",),
    ),
    RouteSpec(
        method="GET",
        path="/v1/exports/transactions",
        operation_id="export_transactions",
        handler=export_transactions,
        summary="Export the program's transactions as CSV, streamed",
        tag="Files",
        response=str,
        media_type="text/csv",
        query=("type", "from", "to"),
    ),
)
