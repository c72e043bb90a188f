"""Who is calling: an API key verified against its stored hash, with a short-lived cache."""

from __future__ import annotations

from tally.domain import Scope
from tally.errors import Forbidden, Unauthorized
from tally.keys import KeyCache, Principal, hash_secret, well_formed
from tally.service.runner import Runner


class Access:
    def __init__(self, runner: Runner, *, key_cache: KeyCache) -> None:
        self._runner = runner
        self._keys = key_cache

    async def authenticate(self, secret: str | None, *, needs: Scope) -> Principal:
        """The caller's program and scope; raises unless the key is known, live and allowed."""
        if not secret or not well_formed(secret):
            raise Unauthorized("A valid API key is required: Authorization: Bearer <key>.")
        digest = hash_secret(secret)
        now = self._runner.clock()
        found, principal = self._keys.get(digest, now=now)
        if not found:
            record = await self._runner.store.lookup(lambda tx: tx.keys.find(digest))
            principal = None
            if record is not None and not record.revoked:
                principal = Principal(record.key_id, record.program_id, record.scope)
            self._keys.put(digest, principal, now=now)
        if principal is None:
            raise Unauthorized("The API key is unknown or has been revoked.")
        if needs is Scope.WRITE and principal.scope != Scope.WRITE:
            raise Forbidden("This API key may only read; this route needs the write scope.")
        return principal
