"""The export downloads (DESIGN §11). Agents and admins only: a whole list is sensitive (decisions.md)."""

from __future__ import annotations

import datetime as dt

from pydantic import ConfigDict, Field, field_validator, model_validator
from starlette.responses import Response

from server import export
from server.api import Ctx, Query, Router
from server.audit import service as audit
from server.contacts import export as contacts_export
from server.messages import export as messages_export

EXPORT_TYPES = ("text/csv", "application/x-ndjson")


async def _record(ctx: Ctx[None], what: str, details: dict[str, object]) -> None:
    """An export is a read, so its audit entry is written on its own, before the first row."""
    async with ctx.db.transaction() as s:
        audit.record_for(s, ctx, action="export.started", target=what, details=details)


router = Router(tag="export")


class ContactExportQuery(Query):
    q: str | None = Field(default=None, max_length=200)
    tag: str | None = Field(default=None, max_length=64)
    format: export.Format = export.Format.csv


class MessageExportQuery(Query):
    """`from` (inclusive) and `to` (exclusive): ISO dates or datetimes, UTC unless they say otherwise."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    since: dt.datetime | None = Field(default=None, alias="from")
    until: dt.datetime | None = Field(default=None, alias="to")
    format: export.Format = export.Format.csv

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, v: dt.datetime | None) -> dt.datetime | None:
        return v.replace(tzinfo=dt.UTC) if v is not None and v.tzinfo is None else v

    @model_validator(mode="after")
    def _ordered(self) -> MessageExportQuery:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("`from` must not be after `to`")
        return self


@router.op("GET", "/contacts/export", query=ContactExportQuery, role="agent", media_types=EXPORT_TYPES)
async def export_contacts(ctx: Ctx[None]) -> Response:
    """Every contact matching `q` and `tag`, newest first, streamed as CSV or NDJSON, with its
    consent per channel (`opted_in`, `opted_out`, or empty/null when none was recorded)."""
    query: ContactExportQuery = ctx.query
    await _record(ctx, "contacts", {"format": query.format.value, "q": query.q, "tag": query.tag})
    fetch = contacts_export.batches(ctx.reads, workspace_id=ctx.workspace_id, q=query.q, tag=query.tag)
    columns = contacts_export.columns(query.format)
    return export.response(fetch, columns, query.format, filename="contacts")


@router.op("GET", "/messages/export", query=MessageExportQuery, role="agent", media_types=EXPORT_TYPES)
async def export_messages(ctx: Ctx[None]) -> Response:
    """Messages created from `from` until `to`, oldest first, streamed as CSV or NDJSON."""
    query: MessageExportQuery = ctx.query
    span = {
        "from": query.since.isoformat() if query.since else None,
        "to": query.until.isoformat() if query.until else None,
    }
    await _record(ctx, "messages", {"format": query.format.value, **span})
    fetch = messages_export.batches(
        ctx.reads, workspace_id=ctx.workspace_id, since=query.since, until=query.until
    )
    return export.response(fetch, messages_export.COLUMNS, query.format, filename="messages")
