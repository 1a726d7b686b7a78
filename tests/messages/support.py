from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Select, select
from sqlalchemy.sql import ColumnElement

from server.db import Database
from server.events.models import Event


async def contact(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Ada", "email": "ada@example.test", "phone": "+14155552671"}
    body.update(fields)
    r = await client.post("/api/v1/contacts", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def template(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Welcome", "channel": "email", "subject": "Hi {{ name }}", "body": "Hello {{ name }}!"}
    body.update(fields)
    r = await client.post("/api/v1/templates", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def logged(*where: ColumnElement[bool]) -> Select[tuple[Event]]:
    """The event log as the code under test wrote it: the board feed's `board.counters` summaries,
    which the app folds on its own one-second clock and so can land between any two reads, left out."""
    return select(Event).where(Event.type != "board.counters", *where).order_by(Event.id)


async def events(db: Database, type_: str) -> list[dict[str, Any]]:
    async with db.transaction() as s:
        rows = await s.execute(
            select(Event).where(Event.type == type_).order_by(Event.workspace_id, Event.id)
        )
        return [e.data for e in rows.scalars()]
