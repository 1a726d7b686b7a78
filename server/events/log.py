"""The event log as the realtime layer reads it: `SqlEventLog` implements `realtime.types.EventLog`
over our tables (`event`, `workspace.event_seq`, `contact`, `user`), so realtime needs no server import."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import Text, cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from realtime.topics import Topic, sql_filter
from realtime.types import Event, Reader
from server.auth.models import User, display_name
from server.contacts.models import Contact
from server.conversations.models import Conversation
from server.events.models import Event as EventRow
from server.events.service import NOTIFY_CHANNEL, emit, envelope
from server.workspaces.models import Workspace

_COLUMNS = (
    EventRow.workspace_id,
    EventRow.id,
    EventRow.type,
    EventRow.contact_id,
    EventRow.ts,
    # The stored JSON text, not decoded to be encoded again at once: the relay reads every event
    # of every workspace, and the decode and re-encode were a tenth of a busy web process.
    cast(EventRow.data, Text).label("data"),
)


def to_event(row: Any) -> Event:
    """The event of a row read with `_COLUMNS` (its `data` the stored JSON text, embedded as is)."""
    # Unpacked once: a Row's attribute lookups were half of this function's time in the relay.
    workspace_id, id_, type_, contact_id, ts, data = row
    env = envelope(id_, type_, ts, {})
    env["data"] = orjson.Fragment(data)
    return Event(workspace_id, id_, type_, contact_id, orjson.dumps(env))


class SqlEventLog:
    """Stateless; one per app (`Services.realtime` is given it)."""

    notify_channel = NOTIFY_CHANNEL

    async def read_events(
        self,
        session: Reader,
        workspace_id: int,
        after: int,
        *,
        upto: int | None = None,
        topics: frozenset[Topic] | None = None,
        limit: int = 500,
    ) -> list[Event]:
        # Plain rows, not ORM objects: the relay reads every event once per process.
        q = select(*_COLUMNS).where(EventRow.workspace_id == workspace_id, EventRow.id > after)
        if upto is not None:
            q = q.where(EventRow.id <= upto)
        if topics is not None:
            q = q.where(sql_filter(topics, EventRow.type, EventRow.contact_id))
        rows = await session.execute(q.order_by(EventRow.id).limit(limit))
        return [to_event(r) for r in rows]

    async def heads(self, session: Reader, workspace_ids: Iterable[int] | None = None) -> dict[int, int]:
        q = select(Workspace.id, Workspace.event_seq)
        if workspace_ids is not None:
            q = q.where(Workspace.id.in_(list(workspace_ids)))
        else:
            q = q.where(Workspace.event_seq > 0)
        return {int(w): int(s) for w, s in (await session.execute(q)).all()}

    async def first_since(self, session: Reader, since: dt.datetime) -> dict[int, int]:
        q = (
            select(EventRow.workspace_id, func.min(EventRow.id))
            .where(EventRow.ts >= since)
            .group_by(EventRow.workspace_id)
        )
        return {int(w): int(i) for w, i in (await session.execute(q)).all()}

    async def oldest_retained(self, session: Reader, workspace_id: int) -> int | None:
        q = select(func.min(EventRow.id)).where(EventRow.workspace_id == workspace_id)
        value = (await session.execute(q)).scalar()
        return None if value is None else int(value)

    async def contacts_exist(self, session: Reader, workspace_id: int, ids: list[int]) -> set[int]:
        if not ids:
            return set()
        q = select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.id.in_(ids))
        return {int(i) for i in (await session.execute(q)).scalars()}

    async def conversation_exists(self, session: Reader, workspace_id: int, conversation_id: int) -> bool:
        q = select(Conversation.id).where(
            Conversation.workspace_id == workspace_id, Conversation.id == conversation_id
        )
        return (await session.execute(q)).scalar_one_or_none() is not None

    async def prune(self, session: AsyncSession, older_than: dt.datetime) -> int:
        """`workspace.event_seq` keeps the id counter, so pruning never reuses an id."""
        result = await session.execute(delete(EventRow).where(EventRow.ts < older_than))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def user_name(self, session: AsyncSession, workspace_id: int, user_id: int) -> str:
        q = select(User.name, User.email).where(User.id == user_id, User.workspace_id == workspace_id)
        row = (await session.execute(q)).first()
        return "" if row is None else display_name(row.name, row.email)

    async def emit(
        self,
        session: AsyncSession,
        workspace_id: int,
        type: str,
        data: dict[str, Any],
        *,
        contact_id: int | None,
    ) -> None:
        await emit(session, workspace_id, type, data, contact_id=contact_id)
