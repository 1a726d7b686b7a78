"""Recording and reading the admin audit log.

    await audit.record(s, workspace_id=ws, actor=actor_of(ctx.principal), action="provider.updated",
                       target=f"provider:{p.id}", ip=client_ip(ctx.request), details={"fields": [...]})

`record` only adds a row to the caller's session: it commits with the change it describes or not
at all. Details carry names and ids, never secret values (a provider change lists the names of
the changed fields)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from server.audit.models import AuditEntry
from server.db import utcnow

if TYPE_CHECKING:
    from server.api import Ctx

ACTOR_TYPES = ("user", "api_key", "system")


@dataclass(frozen=True, slots=True)
class Actor:
    type: str  # user | api_key | system
    id: int | None = None

    @classmethod
    def user(cls, user_id: int) -> Actor:
        return cls("user", user_id)

    @classmethod
    def api_key(cls, key_id: int) -> Actor:
        return cls("api_key", key_id)

    @classmethod
    def parse(cls, raw: str) -> Actor:
        """`user:5`, `api_key:3` or `system` (the `?actor=` filter)."""
        kind, _, value = raw.partition(":")
        if kind not in ACTOR_TYPES or (kind == "system") != (value == ""):
            raise ValueError("actor is user:<id>, api_key:<id> or system")
        return cls(kind, int(value) if value else None)


SYSTEM = Actor("system")


def actor_of(principal: Any) -> Actor:
    """The actor of an authenticated caller (`server.auth.principal.Principal`)."""
    key_id = getattr(principal, "api_key_id", None)
    if key_id is not None:
        return Actor.api_key(key_id)
    return Actor.user(principal.user_id)


def client_ip(conn: HTTPConnection | None) -> str | None:
    """The socket peer (behind nginx, uvicorn's proxy_headers has put the client's address there)."""
    if conn is None or conn.client is None:
        return None
    return conn.client.host


def record(
    session: AsyncSession,
    *,
    workspace_id: int,
    actor: Actor,
    action: str,
    target: str = "",
    ip: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit row to the session's transaction (flushed with the change it describes)."""
    entry = AuditEntry(
        workspace_id=workspace_id,
        at=utcnow(),
        actor_type=actor.type,
        actor_id=actor.id,
        action=action,
        target=target[:200],
        ip=ip[:64] if ip else None,
        details=details or {},
    )
    session.add(entry)
    return entry


def record_for(
    session: AsyncSession,
    ctx: Ctx[Any],
    *,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """`record` for an API handler: the workspace, actor and address come from its `Ctx`."""
    return record(
        session,
        workspace_id=ctx.workspace_id,
        actor=actor_of(ctx.principal),
        action=action,
        target=target,
        ip=client_ip(ctx.request),
        details=details,
    )


def changed_fields(changes: dict[str, Any]) -> list[str]:
    """The names a change touched, config keys as `config.<name>`: never the values."""
    names: list[str] = []
    for name, value in changes.items():
        if isinstance(value, dict) and name == "config":
            names += [f"config.{k}" for k in sorted(value)]
        else:
            names.append(name)
    return sorted(names)


async def search(
    session: AsyncSession,
    *,
    workspace_id: int,
    actor: Actor | None = None,
    action: str | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Newest first. `action` is a full name (`auth.login`) or a family (`auth`, `auth.*`)."""
    q = select(AuditEntry).where(AuditEntry.workspace_id == workspace_id)
    if actor is not None:
        q = q.where(AuditEntry.actor_type == actor.type)
        if actor.id is not None:
            q = q.where(AuditEntry.actor_id == actor.id)
    if action:
        family = action.removesuffix(".*")
        if "." in family and not action.endswith(".*"):
            q = q.where(AuditEntry.action == action)
        else:
            q = q.where(AuditEntry.action.startswith(family + ".", autoescape=True))
    if start is not None:
        q = q.where(AuditEntry.at >= start)
    if end is not None:
        q = q.where(AuditEntry.at < end)
    if before_id is not None:
        q = q.where(AuditEntry.id < before_id)
    rows = await session.execute(q.order_by(AuditEntry.id.desc()).limit(limit))
    return list(rows.scalars())


async def prune(session: AsyncSession, *, older_than_days: float) -> int:
    """Remove entries past the retention period (the only deletion the log ever sees)."""
    cutoff = utcnow() - dt.timedelta(days=older_than_days)
    result = await session.execute(delete(AuditEntry).where(AuditEntry.at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
