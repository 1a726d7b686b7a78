"""Contact export: every contact matching a search (server/contacts/search.py), newest first,
with its consent per channel (server/consent/service.channel_state) read once per batch."""

from __future__ import annotations

from collections.abc import Sequence

from server.consent import service as consent
from server.contacts.models import Contact
from server.contacts.search import list_query
from server.db import Database
from server.export import FetchBatch, Format, Row

FIELDS = ("id", "name", "email", "phone", "tags", "attributes", "created_at", "updated_at")
CONSENT_CHANNELS = ("email", "sms", "whatsapp")
# CSV: a column per channel, named as the importer reads it back; NDJSON: one `consent` object.
CSV_COLUMNS = (*FIELDS, *(f"{channel}_consent" for channel in CONSENT_CHANNELS))
NDJSON_COLUMNS = (*FIELDS, "consent")
_SELECTED = tuple(getattr(Contact, c) for c in FIELDS)


def columns(fmt: Format) -> tuple[str, ...]:
    return CSV_COLUMNS if fmt is Format.csv else NDJSON_COLUMNS


def batches(db: Database, *, workspace_id: int, q: str | None, tag: str | None) -> FetchBatch:
    """Keyset batches by id (the list's order and cursor), each read in its own transaction with
    one more query for the batch's consent."""

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
            rows = [r._asdict() for r in await s.execute(stmt)]
            scopes = await consent.channel_scopes(
                s, workspace_id=workspace_id, contact_ids=[r["id"] for r in rows]
            )
        for r in rows:
            states = {ch: consent.channel_state(scopes.get((r["id"], ch), {})) for ch in CONSENT_CHANNELS}
            r["consent"] = states
            r.update({f"{ch}_consent": state for ch, state in states.items()})
        return rows

    return fetch
