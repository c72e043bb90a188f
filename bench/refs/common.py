"""What both references share: the award body they validate and the answer they send.

They decode into Tally's own `AwardIn`, so the references check exactly what Tally checks.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from tally.http.schemas import AwardIn
from tally.http.tuning import tune_collector_for_serving

A = TypeVar("A")

decode_award = msgspec.json.Decoder(AwardIn).decode
encode = msgspec.json.Encoder().encode


def answer(body: bytes) -> tuple[int, bytes]:
    """(status, JSON body) for one award body: 201 with its fields echoed, or 422."""
    try:
        award = decode_award(body)
    except msgspec.DecodeError as error:  # ValidationError is a DecodeError
        return 422, encode({"success": False, "error": {"message": str(error)}})
    data: dict[str, Any] = {
        "member_id": award.member_id,
        "points": award.points,
        "reason": award.reason,
    }
    return 201, encode({"success": True, "data": data})


def serving(app: A) -> A:
    """`app`, in a process whose collector is tuned as `tally serve` tunes it. The harness
    serves each reference through its `serving_app` factory (`uvicorn --factory`)."""
    tune_collector_for_serving()
    return app
