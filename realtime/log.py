"""Reads of the event log (`server.events.models.Event`) that the real-time layer needs, in one place."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker, create_async_engine

from realtime.topics import sql_filter
from realtime.types import Event, Topic
from server.contacts.models import Contact
from server.events.models import Event as EventRow
from server.events.service import envelope
from server.workspaces.models import Workspace

Reader = AsyncSession | AsyncConnection


class LogReader:
    """An engine of the layer's own for reading the log on PostgreSQL: the relay holds a
    connection for its life and hubs read on every sweep, so they stay off the app's pool."""

    def __init__(self, url: str) -> None:
        self.engine = create_async_engine(url, pool_size=2, max_overflow=6, pool_pre_ping=True)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()


_COLUMNS = (
    EventRow.workspace_id,
    EventRow.id,
    EventRow.type,
    EventRow.contact_id,
    EventRow.ts,
    EventRow.data,
)


def to_event(row: Any) -> Event:
    payload = orjson.dumps(envelope(row.id, row.type, row.ts, row.data))
    return Event(row.workspace_id, row.id, row.type, row.contact_id, payload)


async def read_events(
    session: Reader,
    workspace_id: int,
    after: int,
    *,
    upto: int | None = None,
    topics: frozenset[Topic] | None = None,
    limit: int = 500,
) -> list[Event]:
    """Committed events after `after` (and up to `upto`), oldest first, optionally by topic."""
    # Plain rows, not ORM objects: the relay reads every event once per process.
    q = select(*_COLUMNS).where(EventRow.workspace_id == workspace_id, EventRow.id > after)
    if upto is not None:
        q = q.where(EventRow.id <= upto)
    if topics is not None:
        q = q.where(sql_filter(topics, EventRow.type, EventRow.contact_id))
    rows = await session.execute(q.order_by(EventRow.id).limit(limit))
    return [to_event(r) for r in rows]


async def heads(session: Reader, workspace_ids: Iterable[int] | None = None) -> dict[int, int]:
    """The last committed event id of each workspace (all, or those given)."""
    q = select(Workspace.id, Workspace.event_seq)
    if workspace_ids is not None:
        q = q.where(Workspace.id.in_(list(workspace_ids)))
    else:
        q = q.where(Workspace.event_seq > 0)
    return {int(w): int(s) for w, s in (await session.execute(q)).all()}


async def first_since(session: AsyncSession, since: dt.datetime) -> dict[int, int]:
    """Per workspace, the first id written at or after `since` (workspaces with such events only)."""
    q = (
        select(EventRow.workspace_id, func.min(EventRow.id))
        .where(EventRow.ts >= since)
        .group_by(EventRow.workspace_id)
    )
    return {int(w): int(i) for w, i in (await session.execute(q)).all()}


async def oldest_retained(session: AsyncSession, workspace_id: int) -> int | None:
    q = select(func.min(EventRow.id)).where(EventRow.workspace_id == workspace_id)
    value = (await session.execute(q)).scalar()
    return None if value is None else int(value)


async def contacts_exist(session: AsyncSession, workspace_id: int, ids: list[int]) -> set[int]:
    if not ids:
        return set()
    q = select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.id.in_(ids))
    return {int(i) for i in (await session.execute(q)).scalars()}


async def prune(session: AsyncSession, older_than: dt.datetime) -> int:
    """Delete events older than the retention; `workspace.event_seq` keeps the id counter."""
    result = await session.execute(delete(EventRow).where(EventRow.ts < older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
