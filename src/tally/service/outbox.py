"""The events every change writes, in its own transaction (api.md, section 8).

An event is `{event_id, type, timestamp, data}`, where `data` is the object exactly as the API
returns it at that moment (`tally.views`). The use cases call these functions next to the rows
they write, so an event exists if and only if its change committed; the feed, the webhook
endpoints and the dispatcher read them from the store.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from tally import ids
from tally.domain import Entry, Event, Member, Redemption, Reward
from tally.ports import Tx
from tally.views import member_out, redemption_out, reward_out, transaction_out

# Every event type, in the order the API documents them.
EVENT_TYPES: tuple[str, ...] = (
    "member.created",
    "member.updated",
    "member.erased",
    "transaction.created",  # any new ledger row: award, deduct, transfer_out, transfer_in, ...
    "transaction.posted",  # a pending award matured
    "transaction.cancelled",  # a pending award was cancelled
    "reward.created",
    "reward.updated",
    "redemption.created",
    "redemption.cancelled",
)


class _Envelope(msgspec.Struct):
    event_id: str
    type: str
    timestamp: datetime
    data: Any


_encode = msgspec.json.Encoder().encode


def event(program_id: int, type: str, data: Any, now: datetime) -> Event:
    """A new event of `type` carrying `data` (a struct of `tally.views`)."""
    event_id = ids.new_id("evt_", now)
    body = _encode(_Envelope(event_id, type, now, data)).decode()
    return Event(event_id, program_id, type, now, body)


def transactions_created(tx: Tx, entries: Iterable[Entry], now: datetime) -> None:
    tx.events.append(
        [event(e.program_id, "transaction.created", transaction_out(e), now) for e in entries]
    )


def transaction_posted(tx: Tx, entry: Entry, now: datetime) -> None:
    tx.events.append([event(entry.program_id, "transaction.posted", transaction_out(entry), now)])


def transaction_cancelled(tx: Tx, entry: Entry, now: datetime) -> None:
    data = transaction_out(entry)
    tx.events.append([event(entry.program_id, "transaction.cancelled", data, now)])


def member_created(tx: Tx, member: Member, now: datetime) -> None:
    tx.events.append([event(member.program_id, "member.created", member_out(member), now)])


def member_updated(tx: Tx, member: Member, now: datetime) -> None:
    tx.events.append([event(member.program_id, "member.updated", member_out(member), now)])


def member_erased(tx: Tx, member: Member, now: datetime) -> None:
    tx.events.append([event(member.program_id, "member.erased", member_out(member), now)])


def reward_changed(tx: Tx, reward: Reward, now: datetime, *, created: bool) -> None:
    type = "reward.created" if created else "reward.updated"
    tx.events.append([event(reward.program_id, type, reward_out(reward), now)])


def redemption_changed(tx: Tx, redemption: Redemption, now: datetime, *, created: bool) -> None:
    type = "redemption.created" if created else "redemption.cancelled"
    tx.events.append([event(redemption.program_id, type, redemption_out(redemption), now)])
