"""What the delivery board and the provider pages read: recent messages, counters, a message with
its timeline, and per-provider send health. Read-only queries for the dashboard (`ui/`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from server.contacts.models import Contact
from server.db import utcnow
from server.messages import counters as message_counters
from server.messages.counters import CHANNELS as CHANNELS
from server.messages.counters import STATUSES as STATUSES
from server.messages.models import Message, MessageEvent
from server.messages.service import MessageNotFound

SENT = ("sent", "delivered")
FAILED = ("failed", "bounced")


@dataclass(frozen=True, slots=True)
class MessageView:
    message: Message
    contact: Contact | None
    events: list[MessageEvent]


async def counters(session: AsyncSession, *, workspace_id: int, window: dt.timedelta) -> dict[str, Any]:
    """Messages created in the last `window` by (current) status and by channel, read from the
    maintained counters (`server.messages.counters`): whole hours, the current one included."""
    hours = max(0, int(window / dt.timedelta(hours=1)))
    return await message_counters.window(session, workspace_id=workspace_id, hours=hours)


async def recent(
    session: AsyncSession,
    *,
    workspace_id: int,
    channel: str = "",
    status: str = "",
    provider: str = "",
    limit: int,
) -> list[dict[str, Any]]:
    """The newest messages (with their contact's name) matching the filters that are set."""
    stmt = (
        select(Message, Contact.name)
        .outerjoin(Contact, Contact.id == Message.contact_id)
        .where(Message.workspace_id == workspace_id)
    )
    if channel:
        stmt = stmt.where(Message.channel == channel)
    if status:
        stmt = stmt.where(Message.status == status)
    if provider:
        stmt = stmt.where(Message.provider_kind == provider)
    rows = await session.execute(stmt.order_by(Message.id.desc()).limit(limit))
    return [{"m": m, "contact_name": name} for m, name in rows]


async def message_view(session: AsyncSession, *, workspace_id: int, message_id: int) -> MessageView:
    """A message of this workspace with its contact and timeline; `MessageNotFound` otherwise."""
    m = await session.get(Message, message_id)
    if m is None or m.workspace_id != workspace_id:
        raise MessageNotFound(message_id)
    contact = await session.get(Contact, m.contact_id) if m.contact_id else None
    events = await session.execute(
        select(MessageEvent).where(MessageEvent.message_id == m.id).order_by(MessageEvent.id)
    )
    return MessageView(m, contact, list(events.scalars()))


async def provider_health(
    session: AsyncSession, *, workspace_id: int, window: dt.timedelta
) -> dict[int, dict[str, int]]:
    """Messages updated in the last `window` by provider: succeeded (`ok`) and failed."""
    since = utcnow() - window
    rows = await session.execute(
        select(Message.provider_id, Message.status, func.count())
        .where(
            Message.workspace_id == workspace_id,
            Message.updated_at >= since,
            Message.provider_id.is_not(None),
        )
        .group_by(Message.provider_id, Message.status)
    )
    out: dict[int, dict[str, int]] = {}
    for provider_id, status, n in rows:
        if provider_id is None:  # excluded by the query; for the type checker
            continue
        h = out.setdefault(provider_id, {"ok": 0, "failed": 0})
        if status in SENT:
            h["ok"] += n
        elif status in FAILED:
            h["failed"] += n
    return out
