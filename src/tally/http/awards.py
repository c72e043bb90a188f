"""Reading an award: the API's body (`AwardIn`) as a command, for every way an award arrives.

A JSON award, a bulk item and a row of an awards file (`tally.csvfiles.awards`) are judged by
the same schema and the same text rules, so a row is refused exactly where the API would refuse
the same award, with the same field named.
"""

from __future__ import annotations

import msgspec

from tally.commands import AwardCommand
from tally.http import inputs
from tally.http import schemas as s


def award_command(body: s.AwardIn, *, prefix: str = "") -> AwardCommand:
    """The command of a decoded award; `prefix` places a bulk item in its request."""
    return AwardCommand(
        member_id=body.member_id,
        points=body.points,
        reason=body.reason,
        reference=body.reference,
        metadata=s.stored_json(body.metadata),
        available_at=inputs.utc(body.available_at, field=prefix + "available_at"),
        expires_at=inputs.utc(body.expires_at, field=prefix + "expires_at"),
    )


def award_of_fields(fields: dict[str, object]) -> AwardCommand:
    """An award from fields already split apart (a file's row: text, and points as an int),
    judged as the API judges a JSON award; raises `ValidationFailed` naming the field."""
    try:
        body = msgspec.convert(fields, s.AwardIn)
    except msgspec.ValidationError as error:
        raise inputs.validation_error(str(error)) from None
    inputs.check_text_fields(body)
    return award_command(body)
