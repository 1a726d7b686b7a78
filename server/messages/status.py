"""Moving messages through the status machine, with their history and events, in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import utcnow
from server.events.service import NewEvent, emit_many
from server.messages.models import Message, MessageEvent, MessageStatus


@dataclass(frozen=True, slots=True)
class StatusChange:
    message: Message
    status: MessageStatus
    reason: str | None = None
    raw: dict[str, Any] | None = None
    provider_event_id: str | None = None


def event_data(m: Message) -> dict[str, Any]:
    """`data` of `message.created` / `message.status` (DESIGN §6)."""
    return {
        "message_id": m.id,
        "contact_id": m.contact_id,
        "channel": m.channel,
        "status": m.status,
        "provider": m.provider_kind,
        "reason": m.reason,
    }


async def apply_changes(
    session: AsyncSession, workspace_id: int, changes: list[StatusChange]
) -> list[Message]:
    """Apply the allowed changes (forward only, never out of a terminal state); returns the messages
    that changed. Each change writes a `message_event` row and a `message.status` event."""
    now = utcnow()
    changed: list[Message] = []
    history: list[dict[str, Any]] = []
    for c in changes:
        m = c.message
        if not MessageStatus(m.status).can_move_to(c.status):
            continue
        m.status = c.status.value
        m.updated_at = now
        if c.reason is not None or c.status in (MessageStatus.sent, MessageStatus.delivered):
            m.reason = c.reason
        if c.status is MessageStatus.sent and m.sent_at is None:
            m.sent_at = now
        changed.append(m)
        history.append(
            {
                "workspace_id": workspace_id,
                "message_id": m.id,
                "status": c.status.value,
                "provider_id": m.provider_id if c.provider_event_id else None,
                "provider_event_id": c.provider_event_id,
                "reason": c.reason,
                "raw": c.raw,
                "at": now,
            }
        )
    if history:
        await session.flush()
        await session.execute(insert(MessageEvent), history)
        await emit_many(
            session,
            workspace_id,
            [NewEvent("message.status", event_data(m), contact_id=m.contact_id) for m in changed],
        )
    return changed
