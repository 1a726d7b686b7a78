"""Contact export: every contact matching a search (server/contacts/search.py), newest first,
with its consent per channel (server/consent/service.channel_state) read once per batch."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Text, cast

from server.consent import service as consent
from server.contacts.models import Contact
from server.contacts.search import list_query
from server.db import Database
from server.export import Cell, Column, FetchBatch, Format, Row

FIELDS = (
    Column("id", Cell.number),
    Column("name", Cell.text),
    Column("email", Cell.text),
    Column("phone", Cell.text),
    Column("tags", Cell.json),
    Column("attributes", Cell.json),
    Column("created_at", Cell.time),
    Column("updated_at", Cell.time),
)
CONSENT_CHANNELS = ("email", "sms", "whatsapp")
# CSV: a column per channel, named as the importer reads it back; NDJSON: one `consent` object.
CSV_COLUMNS = (*FIELDS, *(Column(f"{channel}_consent", Cell.text) for channel in CONSENT_CHANNELS))
NDJSON_COLUMNS = (*FIELDS, Column("consent", Cell.value))
# JSON columns as their stored text (server/export.py says why).
_SELECTED = tuple(
    cast(getattr(Contact, c.name), Text) if c.cell is Cell.json else getattr(Contact, c.name) for c in FIELDS
)
# A row carries its consent in both shapes (`columns` picks one): CSV's words, then NDJSON's object.
_KEYS = (*(c.name for c in CSV_COLUMNS), "consent")
_UNRECORDED = (None,) * len(CONSENT_CHANNELS)
_NO_CONSENT = (*_UNRECORDED, dict(zip(CONSENT_CHANNELS, _UNRECORDED, strict=True)))


def columns(fmt: Format) -> tuple[Column, ...]:
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
            rows = (await (await s.connection()).execute(stmt)).all()
            scopes = await consent.channel_scopes(
                s, workspace_id=workspace_id, contact_ids=[r[0] for r in rows]
            )
        # Most contacts have no recorded consent: its words are worked out only for those that do.
        consents: dict[int, tuple[object, ...]] = {}
        for contact_id in {contact_id for contact_id, _ in scopes}:
            words = tuple(consent.channel_state(scopes.get((contact_id, ch), {})) for ch in CONSENT_CHANNELS)
            consents[contact_id] = (*words, dict(zip(CONSENT_CHANNELS, words, strict=True)))
        return [dict(zip(_KEYS, (*r, *consents.get(r[0], _NO_CONSENT)), strict=True)) for r in rows]

    return fetch
