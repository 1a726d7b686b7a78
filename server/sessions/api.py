"""`GET/DELETE /api/v1/sessions[/{id}]` (the caller's own) and `DELETE /api/v1/users/{id}/sessions`
(admin): sign-ins seen and ended."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from starlette.responses import Response

from server.api import Ctx, Out, Query, Router
from server.audit import service as audit
from server.auth.models import User
from server.errors import Problem
from server.sessions import service

router = Router(tag="sessions")


class SessionOut(Out):
    id: str
    user_agent: str | None
    ip: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime
    current: bool


class Sessions(Out):
    items: list[SessionOut]


class RevokeAllQuery(Query):
    keep_current: bool = False


def _own_user(ctx: Ctx[Any]) -> int:
    if ctx.principal.by_user is None:
        raise Problem(403, "An API key has no sessions; sessions are a person's sign-ins.")
    return ctx.principal.user_id


@router.op("GET", "/sessions", response=Sessions)
async def list_sessions(ctx: Ctx[None]) -> Sessions:
    """Your live sessions (sign-ins): device, address, when made and last renewed; `current` is this one."""
    user_id = _own_user(ctx)
    async with ctx.db.transaction() as s:
        rows = await service.list_sessions(s, user_id=user_id)
    current = ctx.principal.session_id
    return Sessions(
        items=[
            SessionOut(
                id=r.id,
                user_agent=r.user_agent,
                ip=r.ip,
                created_at=r.created_at,
                last_used_at=r.last_used_at,
                current=r.id == current,
            )
            for r in rows
        ]
    )


@router.op("DELETE", "/sessions/{session_id}", status=204, responses={404: "not found"})
async def revoke_one(ctx: Ctx[None]) -> Response:
    """End one of your sessions (it signs out at its next refresh; its sockets close at once)."""
    user_id = _own_user(ctx)
    family = str(ctx.request.path_params["session_id"])[:64]
    async with ctx.db.transaction() as s:
        if not await service.revoke_sessions(s, user_id=user_id, family_id=family):
            raise Problem(404, "No such session.")
    await ctx.services.access_ended(session_ids=[family])
    return Response(status_code=204)


@router.op("DELETE", "/sessions", query=RevokeAllQuery, status=204)
async def revoke_all(ctx: Ctx[None]) -> Response:
    """End all your sessions, this one included ("sign out everywhere"); `?keep_current=true`
    keeps the one making the request."""
    user_id = _own_user(ctx)
    q: RevokeAllQuery = ctx.query
    keep = ctx.principal.session_id if q.keep_current else None
    ended: list[str] = []
    async with ctx.db.transaction() as s:
        for row in await service.list_sessions(s, user_id=user_id):
            if row.id != keep:
                await service.revoke_sessions(s, user_id=user_id, family_id=row.id)
                ended.append(row.id)
    await ctx.services.access_ended(session_ids=ended)
    return Response(status_code=204)


@router.op("DELETE", "/users/{user_id}/sessions", status=204, role="admin", responses={404: "not found"})
async def revoke_users_sessions(ctx: Ctx[None]) -> Response:
    """End every session of a user of the workspace (admin)."""
    user_id = ctx.path_int("user_id")
    async with ctx.db.transaction() as s:
        found = await s.execute(
            select(User.id).where(User.id == user_id, User.workspace_id == ctx.workspace_id)
        )
        if found.first() is None:
            raise Problem(404, "No such user.")
        ended = await service.revoke_sessions(s, user_id=user_id)
        audit.record(
            s,
            workspace_id=ctx.workspace_id,
            actor=audit.actor_of(ctx.principal),
            action="user.sessions_revoked",
            target=f"user:{user_id}",
            ip=audit.client_ip(ctx.request),
            details={"sessions": ended},
        )
    await ctx.services.access_ended(user_id=user_id)
    return Response(status_code=204)
