"""Message export: messages created in a time range, oldest first.

Keyset on (created_at, id), so each batch starts in the (workspace_id, created_at) index where the
previous one ended, however many messages the table holds outside the range.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import and_, or_, select

from server.db import Database
from server.export import Cell, Column, FetchBatch, Row
from server.messages.models import Message

COLUMNS = (
    Column("id", Cell.number),
    Column("contact_id", Cell.number),
    Column("campaign_id", Cell.number),
    Column("channel", Cell.text),
    Column("to_address", Cell.text),
    Column("status", Cell.text),
    Column("provider_kind", Cell.text),
    Column("provider_message_id", Cell.text),
    Column("attempts", Cell.number),
    Column("reason", Cell.text),
    Column("subject", Cell.text),
    Column("body", Cell.text),
    Column("send_at", Cell.time),
    Column("sent_at", Cell.time),
    Column("created_at", Cell.time),
    Column("updated_at", Cell.time),
)
_SELECTED = tuple(getattr(Message, c.name) for c in COLUMNS)
_NAMES = tuple(c.name for c in COLUMNS)


def batches(
    db: Database, *, workspace_id: int, since: dt.datetime | None, until: dt.datetime | None
) -> FetchBatch:
    """Messages with `since <= created_at < until` (either bound optional), as `COLUMNS`."""

    async def fetch(last: Row | None, limit: int) -> Sequence[Row]:
        stmt = select(*_SELECTED).where(Message.workspace_id == workspace_id)
        if until is not None:
            stmt = stmt.where(Message.created_at < until)
        if last is not None:
            at, key = last["created_at"], last["id"]
            stmt = stmt.where(
                Message.created_at >= at,
                or_(Message.created_at > at, and_(Message.created_at == at, Message.id > key)),
            )
        elif since is not None:
            stmt = stmt.where(Message.created_at >= since)
        stmt = stmt.order_by(Message.created_at, Message.id).limit(limit)
        async with db.transaction() as s:
            rows = (await (await s.connection()).execute(stmt)).all()
        return [dict(zip(_NAMES, r, strict=True)) for r in rows]

    return fetch
