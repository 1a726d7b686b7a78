"""Message export: messages created in a time range, oldest first.

Keyset on (created_at, id), so each batch starts in the (workspace_id, created_at) index where the
previous one ended, however many messages the table holds outside the range.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import and_, or_, select

from server.db import Database
from server.export import FetchBatch, Row
from server.messages.models import Message

COLUMNS = (
    "id",
    "contact_id",
    "campaign_id",
    "channel",
    "to_address",
    "status",
    "provider_kind",
    "provider_message_id",
    "attempts",
    "reason",
    "subject",
    "body",
    "send_at",
    "sent_at",
    "created_at",
    "updated_at",
)
_SELECTED = tuple(getattr(Message, c) for c in COLUMNS)


def batches(
    db: Database, *, workspace_id: int, since: dt.datetime | None, until: dt.datetime | None
) -> FetchBatch:
    """Messages with `since <= created_at < until` (either bound optional)."""

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
            return [r._asdict() for r in await s.execute(stmt)]

    return fetch
