"""Writing message rows and their status history directly, at chosen times."""

from __future__ import annotations

import datetime as dt

from server.db import Database
from server.messages.models import Message, MessageEvent


async def add_message(
    db: Database,
    workspace_id: int,
    *,
    channel: str = "email",
    status: str = "queued",
    provider: str | None = None,
    history: list[tuple[str, dt.datetime]] = (),  # type: ignore[assignment]
    next_attempt_at: dt.datetime | None = None,
) -> int:
    async with db.transaction() as s:
        m = Message(
            workspace_id=workspace_id,
            channel=channel,
            to_address="someone@example.test",
            status=status,
            provider_kind=provider,
        )
        if next_attempt_at is not None:
            m.next_attempt_at = next_attempt_at
            m.send_at = next_attempt_at
        s.add(m)
        await s.flush()
        for st, at in history:
            s.add(MessageEvent(workspace_id=workspace_id, message_id=m.id, status=st, at=at))
        return m.id
