"""Who is calling a route: the program their key belongs to, checked for the route's scope.

A write's body is read only once its key has passed, so a stranger learns nothing about how
its body would have been judged. Reading the request itself (the key's header, the body's
bytes, fields and queries) is `inputs.py`; the check of a key is the service's.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from tally.domain import Scope
from tally.http import inputs
from tally.keys import Principal
from tally.service import Ledger


@dataclass(frozen=True, slots=True)
class WriteInput:
    """A write's caller, authenticated, and its body, unread by anyone yet. `key_id` is the
    public id of the caller's key: every ledger row the write makes records it (`created_by`)."""

    program_id: int
    key_id: str
    body: bytes


def ledger(request: Request) -> Ledger:
    """The use cases this app serves (one `Ledger` per app)."""
    found: Ledger = request.app.state.ledger
    return found


async def principal_of(request: Request, *, needs: Scope) -> Principal:
    """The caller's key; raises unless the key is valid and has the scope `needs`."""
    return await ledger(request).access.authenticate(inputs.bearer(request), needs=needs)


async def program_of(request: Request, *, needs: Scope) -> int:
    """The caller's program; raises unless the key is valid and has the scope `needs`."""
    return (await principal_of(request, needs=needs)).program_id


async def reader(request: Request) -> int:
    """The program of a caller that may read."""
    return await program_of(request, needs=Scope.READ)


async def writer(request: Request, *, media: str = "application/json") -> WriteInput:
    """The caller that may write, then the body (within the size limit, of the `media` type)."""
    principal = await principal_of(request, needs=Scope.WRITE)
    limit = request.app.state.settings.max_body_bytes
    body = await inputs.body_bytes(request, limit=limit, media=media)
    return WriteInput(principal.program_id, principal.key_id, body)
