"""Contact export: every contact matching a search (server/contacts/search.py), newest first."""

from __future__ import annotations

from collections.abc import Sequence

from server.contacts.models import Contact
from server.contacts.search import list_query
from server.db import Database
from server.export import FetchBatch, Row

COLUMNS = ("id", "name", "email", "phone", "tags", "attributes", "created_at", "updated_at")
_SELECTED = tuple(getattr(Contact, c) for c in COLUMNS)


def batches(db: Database, *, workspace_id: int, q: str | None, tag: str | None) -> FetchBatch:
    """Keyset batches by id (the list's order and cursor), each read in its own transaction."""

    async def fetch(last: Row | None, limit: int) -> Sequence[Row]:
        stmt = list_query(
            db.dialect,
            workspace_id=workspace_id,
            q=q,
            tag=tag,
            before_id=None if last is None else last["id"],
            columns=_SELECTED,
        ).limit(limit)
        async with db.transaction() as s:
            return [r._asdict() for r in await s.execute(stmt)]

    return fetch
