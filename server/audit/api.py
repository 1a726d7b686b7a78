"""`GET /api/v1/audit` (admin): the workspace's audit log, newest first, cursor-paginated."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, field_validator

from server.api import Ctx, Out, Page, Router
from server.audit import service
from server.audit.models import AuditEntry
from server.pagination import PageQuery, decode_cursor, page_of

router = Router(tag="audit")


def parse_instant(raw: str, *, end: bool = False) -> dt.datetime:
    """A date (`2026-12-03`: the whole day, so `to` includes it) or an RFC 3339 time; naive is UTC."""
    raw = raw.strip()
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            at = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            return at + dt.timedelta(days=1) if end else at
        at = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("a date (YYYY-MM-DD) or an RFC 3339 time") from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


class AuditQuery(PageQuery):
    actor: str | None = Field(default=None, max_length=40)
    action: str | None = Field(default=None, max_length=64)
    from_: str | None = Field(default=None, alias="from", max_length=40)
    to: str | None = Field(default=None, max_length=40)

    @field_validator("actor")
    @classmethod
    def _actor(cls, v: str | None) -> str | None:
        if v:
            service.Actor.parse(v)
        return v or None

    @field_validator("from_", "to")
    @classmethod
    def _instant(cls, v: str | None) -> str | None:
        if v:
            parse_instant(v)
        return v or None


class ActorOut(Out):
    type: str
    id: int | None


class AuditOut(Out):
    id: int
    at: dt.datetime
    actor: ActorOut
    action: str
    target: str
    ip: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, e: AuditEntry) -> AuditOut:
        return cls(
            id=e.id,
            at=e.at,
            actor=ActorOut(type=e.actor_type, id=e.actor_id),
            action=e.action,
            target=e.target,
            ip=e.ip,
            details=e.details or {},
        )


async def query_log(ctx: Ctx[Any], q: AuditQuery) -> Page[AuditOut]:
    async with ctx.db.transaction() as s:
        rows = await service.search(
            s,
            workspace_id=ctx.workspace_id,
            actor=service.Actor.parse(q.actor) if q.actor else None,
            action=q.action,
            start=parse_instant(q.from_) if q.from_ else None,
            end=parse_instant(q.to, end=True) if q.to else None,
            before_id=decode_cursor(q.cursor),
            limit=q.limit + 1,
        )
    return page_of(rows, q.limit, AuditOut.of, Page[AuditOut])


@router.op("GET", "/audit", query=AuditQuery, response=Page[AuditOut], role="admin")
async def list_audit(ctx: Ctx[None]) -> Page[AuditOut]:
    """The audit log, newest first: `actor` (`user:5`, `api_key:3`, `system`), `action` (a name
    such as `provider.updated` or a family such as `auth`), `from`/`to` (dates or RFC 3339 times)."""
    return await query_log(ctx, ctx.query)
