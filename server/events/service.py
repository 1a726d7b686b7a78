"""Writing to the outbox. Call inside the transaction that makes the change, as late as possible:
taking ids locks the workspace row until commit, which is what orders ids by commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.db import dialect_of, utcnow
from server.events.models import Event
from server.workspaces.models import Workspace

NOTIFY_CHANNEL = "switchboard_events"


@dataclass(frozen=True, slots=True)
class NewEvent:
    type: str
    data: dict[str, Any]
    contact_id: int | None = None


async def reserve_ids(session: AsyncSession, workspace_id: int, count: int) -> int:
    """Take `count` consecutive event ids; returns the first. Locks the workspace row."""
    last = (
        await session.execute(
            update(Workspace)
            .where(Workspace.id == workspace_id)
            .values(event_seq=Workspace.event_seq + count)
            .returning(Workspace.event_seq)
        )
    ).scalar_one()
    return int(last) - count + 1


async def emit_many(session: AsyncSession, workspace_id: int, events: list[NewEvent]) -> list[dict[str, Any]]:
    """Append events to the log in this transaction; returns their envelopes."""
    if not events:
        return []
    first = await reserve_ids(session, workspace_id, len(events))
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "workspace_id": workspace_id,
            "id": first + i,
            "type": e.type,
            "contact_id": e.contact_id,
            "data": e.data,
            "ts": now,
        }
        for i, e in enumerate(events)
    ]
    await session.execute(insert(Event), rows)
    if dialect_of(session) == "postgresql":
        # Delivered by PostgreSQL only when this transaction commits: wakes every relay at once.
        await session.execute(text("SELECT pg_notify(:c, :p)"), {"c": NOTIFY_CHANNEL, "p": str(workspace_id)})
    return [envelope(r["id"], r["type"], r["ts"], r["data"]) for r in rows]


async def emit(
    session: AsyncSession,
    workspace_id: int,
    type: str,
    data: dict[str, Any],
    *,
    contact_id: int | None = None,
) -> dict[str, Any]:
    return (await emit_many(session, workspace_id, [NewEvent(type, data, contact_id)]))[0]


def envelope(id: int, type: str, ts: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The public event envelope (DESIGN §6)."""
    return {"id": id, "type": type, "ts": ts.isoformat().replace("+00:00", "Z"), "data": data}


async def read_after(
    session: AsyncSession, workspace_id: int, after: int, *, limit: int = 500
) -> list[Event]:
    rows = await session.execute(
        select(Event)
        .where(Event.workspace_id == workspace_id, Event.id > after)
        .order_by(Event.id)
        .limit(limit)
    )
    return list(rows.scalars())
