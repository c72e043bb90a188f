"""What a transfer of points between two members does (api.md section 9).

The points leave the sender as a `transfer_out` spend (drawn from its lots in spend order, like a
deduct) and reach the receiver as one `transfer_in` entry whose new lots keep the expiry dates
of the lots drawn on: one lot per date, so a transfer never extends a point's life. Pure
functions of values; `tally.service.transfers` writes what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tally import ids
from tally.commands import Posting, TransferCommand
from tally.domain import Draw, EntryType, Lot, Member
from tally.errors import invalid
from tally.rules.points import Spend, check_lifetime_room, new_entry, plan_spend


@dataclass(frozen=True, slots=True)
class Transfer:
    """A planned transfer: the sender's spend, the receiver's entry and account, its new lots."""

    id: str
    sent: Spend
    received: Posting
    lots: list[Lot]


def check_parties(cmd: TransferCommand) -> None:
    """A member cannot transfer to itself."""
    if cmd.from_member_id == cmd.to_member_id:
        raise invalid(
            "to_member_id",
            f"A transfer needs two members; {cmd.to_member_id} is on both sides.",
        )


def plan_transfer(
    sender: Member,
    receiver: Member,
    lots: list[Lot],
    cmd: TransferCommand,
    *,
    now: datetime,
    created_by: str,
) -> Transfer:
    """Move `cmd.points` from `sender` (drawn from `lots`, its open lots covering them) to
    `receiver`. Raises `InsufficientPoints` or `ValidationFailed` before anything is planned."""
    check_parties(cmd)
    check_lifetime_room(receiver, cmd.points)
    sent = plan_spend(
        sender,
        lots,
        EntryType.TRANSFER_OUT,
        cmd.points,
        reason=cmd.reason,
        now=now,
        created_by=created_by,
        reference=cmd.reference,
        metadata=cmd.metadata,
    )
    dates = received_dates(lots, sent.draws)
    account = receiver.account.post(EntryType.TRANSFER_IN, cmd.points).counted()
    entry = new_entry(
        receiver,
        account,
        EntryType.TRANSFER_IN,
        cmd.points,
        reason=cmd.reason,
        now=now,
        created_by=created_by,
        reference=cmd.reference,
        metadata=cmd.metadata,
        expires_at=dates[0][0],  # the soonest: draws are in spend order
    )
    # The first lot takes the entry's id, as an award's does; any others get ids of their own.
    new_lots = [
        Lot(
            entry.id if i == 0 else ids.new_id("lot_", now),
            points,
            expires_at,
            entry.seq,
            source=None if i == 0 else entry.id,
        )
        for i, (expires_at, points) in enumerate(dates)
    ]
    return Transfer(ids.new_id("trf_", now), sent, Posting(entry, account), new_lots)


def received_dates(lots: list[Lot], draws: list[Draw]) -> list[tuple[datetime | None, int]]:
    """The points `draws` take from `lots`, summed by expiry date, in the order drawn (spend
    order: soonest first, never last). Each becomes one lot of the receiver; one lot per date
    also keeps (expiry, ledger position) unique among the receiver's lots."""
    expiry = {lot.entry_id: lot.expires_at for lot in lots}
    dates: dict[datetime | None, int] = {}
    for draw in draws:
        expires_at = expiry[draw.lot_id]
        dates[expires_at] = dates.get(expires_at, 0) + draw.points
    return list(dates.items())
