"""The HTTP error table: every code a `TallyError` can carry has a status, and one table serves."""

from __future__ import annotations

import tally.errors
from tally.errors import TallyError, Unavailable
from tally.http.errors import RETRY_AFTER_SECONDS, STATUS_OF_CODE, error_response
from tally.http.limits import RateLimited


def every_error_class() -> list[type[TallyError]]:
    found: list[type[TallyError]] = []
    waiting: list[type[TallyError]] = [TallyError]
    while waiting:
        kind = waiting.pop()
        found.append(kind)
        waiting += kind.__subclasses__()
    return found


def test_every_error_class_is_in_the_error_table() -> None:
    missing = {kind.__name__: kind.code for kind in every_error_class()}
    assert {name: code for name, code in missing.items() if code not in STATUS_OF_CODE} == {}


def test_the_error_table_holds_only_codes_an_error_can_carry() -> None:
    carried = {kind.code for kind in every_error_class()}
    assert RateLimited in every_error_class()  # the rate limiter's own, in tally.http.limits
    assert set(STATUS_OF_CODE) - carried == set()


def test_the_walk_finds_every_error_class_of_the_module() -> None:
    declared = {
        value
        for value in vars(tally.errors).values()
        if isinstance(value, type) and issubclass(value, TallyError)
    }
    assert declared <= set(every_error_class())


def test_unavailable_is_503_with_retry_after() -> None:
    response = error_response(Unavailable("The database is busy; nothing was changed."))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS["unavailable"])
    assert response.headers["content-type"] == "application/json"


def test_an_error_without_a_code_of_its_own_is_an_internal_error() -> None:
    assert error_response(TallyError("a bug")).status_code == 500
