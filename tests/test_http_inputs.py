"""Reading bodies: msgspec's validation errors become ours, naming the field at fault.

msgspec's ValidationError carries only a message, so `inputs` reads the field from it; these
tests pin the message shapes it relies on against msgspec itself.
"""

from __future__ import annotations

import msgspec
import pytest

from tally.errors import InvalidJson, TallyError, ValidationFailed
from tally.http import inputs
from tally.http.schemas import AwardIn, BulkAwardIn


def refusal(body: bytes, *, prefix: str = "") -> TallyError:
    with pytest.raises(TallyError) as caught:
        inputs.decode(body, AwardIn, prefix=prefix)
    return caught.value


def msgspec_message(body: bytes) -> str:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(body, type=AwardIn)
    return str(caught.value)


# The shapes of msgspec's messages that `inputs` reads (msgspec offers nothing structured).

SHAPES = [
    (
        b'{"member_id": "m", "points": 1.5, "reason": "r"}',
        "Expected `int`, got `float` - at `$.points`",
    ),
    (b'{"member_id": "m", "points": 0, "reason": "r"}', "Expected `int` >= 1 - at `$.points`"),
    (b'{"member_id": "m", "points": 1}', "Object missing required field `reason`"),
    (
        b'{"member_id": "m", "points": 1, "reason": "r", "pionts": 1}',
        "Object contains unknown field `pionts`",
    ),
    (b"[1]", "Expected `object`, got `array`"),
]


@pytest.mark.parametrize(("body", "message"), SHAPES)
def test_msgspec_says_where_in_the_shapes_inputs_reads(body: bytes, message: str) -> None:
    assert msgspec_message(body) == message


def test_msgspec_validation_errors_carry_nothing_but_their_message() -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.json.decode(b'{"points": "5"}', type=AwardIn)
    assert caught.value.args == ("Expected `int`, got `str` - at `$.points`",)
    assert vars(caught.value) == {}


# What the client is told.

FIELDS = [
    (
        b'{"member_id": "m", "points": 1.5, "reason": "r"}',
        "",
        "points",
        "Expected `int`, got `float`.",
    ),
    (b'{"member_id": "m", "points": 1}', "", "reason", "Object missing required field `reason`."),
    (
        b'{"member_id": "m", "points": 1, "reason": "r", "pionts": 1}',
        "",
        "pionts",
        "Object contains unknown field `pionts`.",
    ),
    (
        b'{"member_id": "m", "points": 0, "reason": "r"}',
        "awards[3].",
        "awards[3].points",
        "Expected `int` >= 1.",
    ),
    (
        b'{"member_id": "m", "points": 1}',
        "awards[3].",
        "awards[3].reason",
        "Object missing required field `reason`.",
    ),
    (b"5", "awards[3].", "awards[3]", "Expected `object`, got `int`."),
]


@pytest.mark.parametrize(("body", "prefix", "field", "message"), FIELDS)
def test_a_validation_error_names_the_field_and_keeps_msgspecs_words(
    body: bytes, prefix: str, field: str, message: str
) -> None:
    error = refusal(body, prefix=prefix)
    assert isinstance(error, ValidationFailed)
    assert error.message == f"{field}: {message}"
    assert [(d.field, d.message) for d in error.details] == [(field, message)]


@pytest.mark.parametrize("body", [b"[1]", b'"text"', b"42", b"null", b"{} and more", b"{"])
def test_a_whole_body_that_is_not_a_json_object_is_invalid_json(body: bytes) -> None:
    assert isinstance(refusal(body), InvalidJson)


def test_a_bulk_body_reports_the_awards_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        inputs.decode(b'{"awards": []}', BulkAwardIn)
    assert [d.field for d in caught.value.details] == ["awards"]
