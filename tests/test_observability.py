"""Request ids and logs (api.md section 11): every answer carries an X-Request-Id, every request
is one JSON log line, a bug is logged with its request id, and no key ever reaches a log."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tally.config import Rate
from tally.domain import Scope
from tally.http.observability import JsonFormatter, OneWritePerLoopTurn, configure_logging
from tally.maintenance import create_key
from tally.ports import Store
from tests.support import Api, FakeClock, FakeTicks, serve_app
from tests.test_security_headers import BrokenReads

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger, DEBUG and up."""
    caplog.set_level(logging.DEBUG)
    yield caplog


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """The records of `logger` as the JSON lines `tally serve` writes."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == logger]


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


# X-Request-Id


def test_every_answer_gets_a_request_id(api: Api) -> None:
    api.member("m")
    answers = [
        api.get("/v1/members/m"),
        api.get("/v1/members/ghost"),
        api.get("/v1/nothing"),
        api.client.get("/v1/members"),
        api.client.get("/docs"),
        api.client.get("/healthz"),
    ]
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(GENERATED.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "sent", ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "x" * 128, "a:b/c=d~!"]
)
def test_a_sane_request_id_is_kept(api: Api, sent: str) -> None:
    response = api.client.get("/healthz", headers={"X-Request-Id": sent})
    assert response.headers["x-request-id"] == sent


@pytest.mark.parametrize(
    "sent", ["x" * 129, "has space", "tab\there", "", "é".encode(), b"nul\x00"]
)
def test_an_insane_request_id_is_replaced(api: Api, sent: str | bytes) -> None:
    response = api.client.get("/healthz", headers={"X-Request-Id": sent})
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_a_rate_limited_answer_has_a_request_id(store: Store, clock: FakeClock) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(store, clock=clock, monotonic=FakeTicks(), rate_limit=Rate(1, 1)) as client:
        auth = {"Authorization": f"Bearer {key}", "X-Request-Id": "mine"}
        answers = [client.get("/v1/program", headers=auth) for _ in range(2)]
    assert [(a.status_code, a.headers["x-request-id"]) for a in answers] == [
        (200, "mine"),
        (429, "mine"),
    ]


# One JSON line per request


def test_each_request_is_one_json_line_with_its_route_template(
    api: Api, logged: pytest.LogCaptureFixture
) -> None:
    api.member("m")
    logged.clear()
    response = api.client.get(
        "/v1/members/m/balance", headers={**api.headers(), "X-Request-Id": "req-1"}
    )
    [line] = lines(logged, "tally.access")
    assert set(line) >= {"timestamp", "level", "request_id", "method", "route", "status"}
    assert line["request_id"] == "req-1" == response.headers["x-request-id"]
    assert (line["method"], line["route"], line["status"]) == (
        "GET",
        "/v1/members/{member_id}/balance",
        200,
    )
    assert line["level"] == "info"
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])


def test_an_unknown_route_is_logged_as_unmatched_not_by_its_path(
    api: Api, logged: pytest.LogCaptureFixture
) -> None:
    api.get("/v1/members/m/nothing-here")
    [line] = lines(logged, "tally.access")
    assert (line["route"], line["status"]) == ("unmatched", 404)


def test_a_bug_is_logged_with_its_request_id_and_answered_500(
    store: Store, clock: FakeClock, logged: pytest.LogCaptureFixture
) -> None:
    key = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    with serve_app(BrokenReads(store), clock=clock) as client:  # type: ignore[arg-type]
        response = client.get(
            "/v1/members", headers={"Authorization": f"Bearer {key}", "X-Request-Id": "bug-1"}
        )
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-1"
    [bug] = [line for line in lines(logged, "tally") if line["level"] == "error"]
    assert bug["request_id"] == "bug-1"
    assert (bug["method"], bug["route"]) == ("GET", "/v1/members")
    assert "RuntimeError: a bug in a read" in bug["exception"]
    [line] = lines(logged, "tally.access")
    assert (line["request_id"], line["status"]) == ("bug-1", 500)


def test_no_key_reaches_a_log(
    store: Store, clock: FakeClock, logged: pytest.LogCaptureFixture
) -> None:
    good = create_key(store, program="acme", scope=Scope.WRITE, now=clock()).secret
    unknown = "tally_" + "S" * 43
    secrets = [good, unknown, good[len("tally_") :], "not-a-key-but-secret-7"]
    with serve_app(store, clock=clock, monotonic=FakeTicks(), rate_limit=Rate(1, 2)) as client:
        for secret in secrets:
            auth = {"Authorization": f"Bearer {secret}"}
            client.post("/v1/members", json={"member_id": "m"}, headers=auth)
            client.get("/v1/members/m", headers=auth)
            client.get("/v1/members/m", headers=auth)  # over the limit
        metrics = client.get("/metrics").text
    with serve_app(BrokenReads(store), clock=clock) as client:  # type: ignore[arg-type]
        client.get("/v1/members", headers={"Authorization": f"Bearer {good}"})
    text = everything_logged(logged)
    assert "tally.access" in text and "unhandled error" in text
    for secret in secrets:
        assert secret not in text
        assert secret not in metrics


# tally serve's handler


def test_tally_serve_logs_json_lines_to_its_stream(api: Api) -> None:
    stream = io.StringIO()
    switches = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    handler = configure_logging(stream)
    try:
        assert configure_logging(stream) is handler  # once, however often it is called
        api.client.get("/healthz", headers={"X-Request-Id": "json-1"})
        logging.getLogger("tally").warning("a notable event")
    finally:
        logger = logging.getLogger("tally")
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = switches
    access_line, event = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (access_line["logger"], access_line["request_id"], access_line["route"]) == (
        "tally.access",
        "json-1",
        "/healthz",
    )
    assert (event["level"], event["message"]) == ("warning", "a notable event")


def test_the_json_formatter_keeps_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("multi\nline")
    except ValueError:
        record = logging.getLogger("tally").makeRecord(
            "tally", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: multi\nline" in json.loads(text)["exception"]


class CountingStream(io.StringIO):
    """A stream that counts how often it is flushed (each flush is a write to the file)."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_the_lines_of_one_loop_turn_go_out_in_one_write() -> None:
    stream = CountingStream()
    handler = OneWritePerLoopTurn(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tally.test.batched")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)

    async def one_turn() -> None:
        for n in range(5):
            logger.info("line %d", n)
        assert stream.flushes == 0
        await asyncio.sleep(0)  # lets the loop run the handler's own call_soon
        assert stream.flushes == 1
        logger.warning("at once")
        assert stream.flushes == 2

    try:
        asyncio.run(one_turn())
        logger.info("outside a loop: at once")
        assert stream.flushes == 3
        assert len(stream.getvalue().splitlines()) == 7
    finally:
        logger.removeHandler(handler)
