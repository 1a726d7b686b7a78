"""Writing to the outbox. Call inside the transaction that makes the change, as late as possible:
taking ids locks the workspace row until commit, which is what orders ids by commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
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


# On PostgreSQL, one round trip: take the ids under the workspace row lock, insert the rows, and
# queue the NOTIFY (delivered only at commit, waking every relay at once).
_EMIT_PG = text(
    """
    WITH seq AS (
        UPDATE workspace SET event_seq = event_seq + :n WHERE id = :ws RETURNING event_seq
    ), ins AS (
        INSERT INTO event (workspace_id, id, type, contact_id, data, ts)
        SELECT :ws, seq.event_seq - :n + 1 + r.i, r.type, r.contact_id, r.data, :ts
        FROM seq, jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(i bigint, type text, contact_id bigint, data jsonb)
    )
    SELECT seq.event_seq, pg_notify(:channel, CAST(:ws AS text)) FROM seq
    """
)


async def emit_many(session: AsyncSession, workspace_id: int, events: list[NewEvent]) -> list[dict[str, Any]]:
    """Append events to the log in this transaction; returns their envelopes."""
    if not events:
        return []
    now = utcnow()
    if dialect_of(session) == "postgresql":
        payload = orjson.dumps(
            [
                {"i": i, "type": e.type, "contact_id": e.contact_id, "data": e.data}
                for i, e in enumerate(events)
            ],
            option=orjson.OPT_NON_STR_KEYS,
        ).decode()
        last = (
            await session.execute(
                _EMIT_PG,
                {"n": len(events), "ws": workspace_id, "rows": payload, "ts": now, "channel": NOTIFY_CHANNEL},
            )
        ).scalar_one()
        first = int(last) - len(events) + 1
        return [envelope(first + i, e.type, now, e.data) for i, e in enumerate(events)]
    first = await reserve_ids(session, workspace_id, len(events))
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
